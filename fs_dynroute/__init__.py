"""fs_dynroute: caller-ID based dynamic routing for FreeSWITCH over the outbound event socket."""

__version__ = "0.1.0"
