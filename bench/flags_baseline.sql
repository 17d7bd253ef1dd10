-- The baseline of bench/flags.sh: feature flags evaluated in plain PL/pgSQL, as a competent
-- PL/pgSQL developer would write them without an extension.
--   bench_flags.murmur3_32(bytea, seed)   MurmurHash3 x86 32-bit, unsigned result in a bigint
--   bench_flags.flags                     key -> definition (the same jsonb format as quantops.flags)
--   bench_flags.flag_enabled(key, ctx)    reads the definition by primary key on every call and
--                                         evaluates it as quantops.flag_enabled does
-- What it evaluates (the subset of quantops' format the benchmark flag needs, with the same
-- semantics): environments (the session's quantops.environment, default production), kill_switch,
-- rules (any rule true; no rules = on), constraints with op in / not_in (compared by text,
-- optional inverted and case_insensitive), a rollout with percentage, stickiness (default: user_id,
-- then session_id; or a named attribute, user_id/userId style aliases) and group_id (default: the
-- flag key), bucketed as Unleash does: murmur3("<group_id>:<value>", 0) % 100 + 1 <= percentage.
-- Any other op raises. A number in the context is hashed by its jsonb text (42 -> "42").

create schema if not exists bench_flags;

-- MurmurHash3_x86_32. PostgreSQL has no unsigned 32-bit type, and int4 arithmetic raises on
-- overflow, so every 32-bit value lives in a bigint in 0 .. 2^32-1. A 32x32-bit product does not
-- fit in a signed bigint, so x * C mod 2^32 is computed in 16-bit halves of C:
--   (x * lo(C) + ((x * hi(C)) mod 2^16) << 16) mod 2^32      (each term below 2^49)
-- Note: <<, >>, &, | and # (xor) all share one precedence level in PostgreSQL (left to right),
-- below * and +, hence the parentheses.
create or replace function bench_flags.murmur3_32(data bytea, seed bigint default 0) returns bigint
language plpgsql
immutable strict parallel safe
as $$
declare
  m32 constant bigint := 4294967295;     -- 0xffffffff
  len constant integer := length(data);
  body constant integer := len - (len % 4);
  h bigint := seed & 4294967295;
  k bigint;
  i integer := 0;
begin
  while i < body loop
    k := get_byte(data, i)::bigint | (get_byte(data, i + 1)::bigint << 8)
         | (get_byte(data, i + 2)::bigint << 16) | (get_byte(data, i + 3)::bigint << 24);
    k := ((k * 11601) + (((k * 52382) & 65535) << 16)) & m32;      -- k *= 0xcc9e2d51
    k := ((k << 15) | (k >> 17)) & m32;                             -- rotl(k, 15)
    k := ((k * 13715) + (((k * 7047) & 65535) << 16)) & m32;       -- k *= 0x1b873593
    h := h # k;
    h := ((h << 13) | (h >> 19)) & m32;                             -- rotl(h, 13)
    h := ((h * 5) + 3864292196) & m32;                              -- h = h * 5 + 0xe6546b64
    i := i + 4;
  end loop;
  if len > body then
    k := 0;
    if len - body >= 3 then k := k # (get_byte(data, body + 2)::bigint << 16); end if;
    if len - body >= 2 then k := k # (get_byte(data, body + 1)::bigint << 8); end if;
    k := k # get_byte(data, body)::bigint;
    k := ((k * 11601) + (((k * 52382) & 65535) << 16)) & m32;
    k := ((k << 15) | (k >> 17)) & m32;
    k := ((k * 13715) + (((k * 7047) & 65535) << 16)) & m32;
    h := h # k;
  end if;
  h := h # len;
  h := h # (h >> 16);
  h := ((h * 51819) + (((h * 34283) & 65535) << 16)) & m32;       -- h *= 0x85ebca6b
  h := h # (h >> 13);
  h := ((h * 44597) + (((h * 49842) & 65535) << 16)) & m32;       -- h *= 0xc2b2ae35
  h := h # (h >> 16);
  return h;
end
$$;

create table if not exists bench_flags.flags (
  key        text primary key,
  definition jsonb not null
);

-- A context attribute is read as quantops reads it: a string, number or boolean (a null, array or
-- object counts as missing), under its name, else under its alternative spelling (user_id/userId,
-- session_id/sessionId, remote_address/remoteAddress); inlined, as a function call per attribute
-- would cost more than the lookup.
create or replace function bench_flags.flag_enabled(key text, context jsonb default '{}'::jsonb) returns boolean
language plpgsql
stable parallel safe
as $$
declare
  def jsonb;
  env text;
  rules jsonb;
  rule jsonb;
  cons jsonb;
  c jsonb;
  vals jsonb;
  ro jsonb;
  cv jsonb;
  v text;
  attr text;
  alias text;
  stick text;
  pct integer;
  found_ boolean;
  ok boolean;
  ci boolean;
  r integer;
  j integer;
  x integer;
begin
  if key is null then
    return false;
  end if;
  select f.definition into def from bench_flags.flags f where f.key = flag_enabled.key;
  if def is null then
    return false;                                   -- unknown flag
  end if;
  if context is null then
    context := '{}'::jsonb;
  elsif jsonb_typeof(context) <> 'object' then
    return false;                                   -- a context must be an object
  end if;
  if coalesce((def ->> 'kill_switch')::boolean, false) then
    return false;
  end if;
  env := coalesce(nullif(current_setting('quantops.environment', true), ''), 'production');
  if not coalesce((def -> 'environments' ->> env)::boolean, false) then
    return false;                                   -- environment off or absent
  end if;
  rules := def -> 'rules';
  if rules is null or jsonb_array_length(rules) = 0 then
    return true;                                    -- no rules: on for everyone
  end if;
  <<each_rule>>
  for r in 0 .. jsonb_array_length(rules) - 1 loop
    rule := rules -> r;
    -- every constraint must match
    cons := rule -> 'constraints';
    if cons is not null then
      for j in 0 .. jsonb_array_length(cons) - 1 loop
        c := cons -> j;
        attr := c ->> 'attribute';
        cv := context -> attr;
        if cv is null or jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
          alias := case attr when 'user_id' then 'userId' when 'userId' then 'user_id'
                             when 'session_id' then 'sessionId' when 'sessionId' then 'session_id'
                             when 'remote_address' then 'remoteAddress' when 'remoteAddress' then 'remote_address' end;
          cv := case when alias is not null then context -> alias end;
          if cv is not null and jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
            cv := null;
          end if;
        end if;
        v := cv #>> '{}';
        case c ->> 'op'
          when 'in', 'not_in' then
            vals := c -> 'values';
            ci := coalesce((c ->> 'case_insensitive')::boolean, false);
            found_ := false;
            if v is not null then
              if not ci then
                found_ := vals ? v;                 -- string elements (the usual case)
              end if;
              if not found_ then                    -- numbers, booleans, case-insensitive
                for x in 0 .. jsonb_array_length(vals) - 1 loop
                  if (not ci and jsonb_typeof(vals -> x) <> 'string' and vals ->> x = v)
                     or (ci and lower(vals ->> x) = lower(v)) then
                    found_ := true;
                    exit;
                  end if;
                end loop;
              end if;
            end if;
            ok := found_ <> (c ->> 'op' = 'not_in');
          else
            raise exception 'bench_flags.flag_enabled: op "%" is not implemented by the baseline', c ->> 'op';
        end case;
        if ok = coalesce((c ->> 'inverted')::boolean, false) then
          continue each_rule;                       -- this constraint fails: next rule
        end if;
      end loop;
    end if;
    -- the rollout, if any
    ro := rule -> 'rollout';
    if ro is null then
      return true;
    end if;
    pct := (ro ->> 'percentage')::integer;
    if pct = 0 then
      continue;
    end if;
    stick := coalesce(ro ->> 'stickiness', 'default');
    v := null;
    if stick = 'default' then
      -- user_id (else userId), then session_id (else sessionId); an empty string is skipped
      foreach attr in array array['user_id', 'session_id'] loop
        cv := context -> attr;
        if cv is null or jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
          cv := context -> (case attr when 'user_id' then 'userId' else 'sessionId' end);
          if cv is not null and jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
            cv := null;
          end if;
        end if;
        v := cv #>> '{}';
        exit when v <> '';
        v := null;
      end loop;
      if v is null then
        if pct = 100 then return true; end if;      -- Unleash's random draw: always inside 100 %
        continue;
      end if;
    else
      cv := context -> stick;
      if cv is null or jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
        alias := case stick when 'user_id' then 'userId' when 'userId' then 'user_id'
                            when 'session_id' then 'sessionId' when 'sessionId' then 'session_id'
                            when 'remote_address' then 'remoteAddress' when 'remoteAddress' then 'remote_address' end;
        cv := case when alias is not null then context -> alias end;
        if cv is not null and jsonb_typeof(cv) not in ('string', 'number', 'boolean') then
          cv := null;
        end if;
      end if;
      if cv is null then
        continue;                                   -- a named attribute that is missing: out
      end if;
      v := cv #>> '{}';
    end if;
    if bench_flags.murmur3_32(convert_to(coalesce(ro ->> 'group_id', key) || ':' || v, 'UTF8'), 0) % 100 + 1 <= pct then
      return true;
    end if;
  end loop;
  return false;
end
$$;
