-- quantops finalize: runs last in CREATE EXTENSION quantops, after every routine exists.
-- (SECURITY DEFINER and the pinned search_path of each Rust function are its #[pg_extern]'s
-- attributes; who may execute it is its row in quantops.routine_grants, next to it.)

-- Default deny: nobody but the owner runs anything until granted.
revoke execute on all routines in schema quantops from public;
select quantops.grant_roles();
