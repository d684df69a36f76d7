-- The demo rule and routes of the module's documentation, in SQL that SQLite, MariaDB/MySQL and
-- PostgreSQL all accept. Load it after db/schema.<backend>.sql; `fs-dynroute initdb --demo` adds the same.
INSERT INTO dynroute_destination (name, transfer) VALUES ('main-ivr', '5000 XML default');
INSERT INTO dynroute_rule (name, source, digits_match, match_destination, no_match_destination,
                           delete_after_use, enabled, match_mode, created_at, updated_at)
VALUES ('Customer Routing', '5550100', 10, 'dynamic', 'main-ivr', FALSE, TRUE, 'exact',
        CURRENT_TIMESTAMP, CURRENT_TIMESTAMP);
INSERT INTO dynroute_route (rule_id, caller_key, destination, notes)
SELECT id, '5551111111', '1001', 'Acme account' FROM dynroute_rule WHERE name = 'Customer Routing';
INSERT INTO dynroute_route (rule_id, caller_key, destination, notes)
SELECT id, '5552222222', '1002', 'Widget Inc' FROM dynroute_rule WHERE name = 'Customer Routing';
