\echo Use "ALTER EXTENSION quantops UPDATE" to load this file. \quit
-- quantops 0.1.0 -> 0.2.0. Every change to the SQL surface after 0.1.0 goes here (CHANGELOG.md).
-- Nothing yet.
