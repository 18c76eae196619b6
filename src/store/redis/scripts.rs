//! The Lua scripts that make each store operation one atomic step in Redis.
//!
//! Redis runs a script without interleaving any other command, so an admin write and
//! its index updates land together and no reader sees half a key; the reads that follow
//! an index (hash → id → record) are scripts too, so they never see an index entry
//! without its record. Redis does not roll back a script that fails half way, so every
//! write script makes all its checks before its first write.
//!
//! Every script gets the namespace prefix (`keygate:`) as `ARGV[1]` and builds its key
//! names from it; the layout is described in `super` (the `redis` module docs). Scripts
//! return a status word rather than raising errors, so that the Rust side can turn each
//! outcome into the right `StoreError`.

/// `ARGV`: prefix, hash (hex). → nil | {id} (record missing) |
/// {id, json, suspended, last_used} where `suspended` is '1' when the key's org has
/// `key_policy: creator` and its creator is disabled, deleted or gone: derived in the
/// same atomic read as the key, so no write can fall between the two. `last_used` is
/// the key's `last_used` field ('' if none; see [`TOUCH_KEYS`]).
pub(super) const KEY_BY_HASH: &str = r#"
local p = ARGV[1]
local id = redis.call('HGET', p .. 'key_hashes', ARGV[2])
if not id then return false end
local k = redis.call('HMGET', p .. 'key:' .. id, 'json', 'org', 'creator', 'last_used')
if not k[1] then return {id} end
local suspended = '0'
local org = k[2] and redis.call('HGET', p .. 'orgs', k[2])
-- Decoded only if it can hold the policy: most orgs' JSON has no 'creator' at all.
if org and string.find(org, 'creator', 1, true) and cjson.decode(org).key_policy == 'creator' then
  local pj = k[3] and redis.call('HGET', p .. 'principal:' .. k[3], 'json')
  if not pj then
    suspended = '1'
  else
    local pr = cjson.decode(pj)
    if pr.disabled == true or (pr.deleted_at ~= nil and pr.deleted_at ~= cjson.null) then
      suspended = '1'
    end
  end
end
return {id, k[1], suspended, k[4] or ''}
"#;

/// `ARGV`: prefix, index key suffix, record hash key (or '' for `key:<id>` hashes),
/// after ('' = from the newest), count. → flat {id, json, last_used, id, json,
/// last_used, …}, newest first; a json of '' means the record is missing, and
/// `last_used` is a key's `last_used` field ('' if none, and for other records).
///
/// Index members all have score 0, so lexicographic order is id order, which is
/// creation order for ULID ids.
pub(super) const PAGE: &str = r#"
local p, index, records, after, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local max = '+'
if after ~= '' then max = '(' .. after end
local ids = redis.call('ZREVRANGEBYLEX', p .. index, max, '-', 'LIMIT', 0, n)
local out = {}
for _, id in ipairs(ids) do
  local json, last_used
  if records == '' then
    local k = redis.call('HMGET', p .. 'key:' .. id, 'json', 'last_used')
    json, last_used = k[1], k[2]
  else
    json = redis.call('HGET', p .. records, id)
  end
  out[#out + 1] = id
  out[#out + 1] = json or ''
  out[#out + 1] = last_used or ''
end
return out
"#;

/// `ARGV`: prefix, principal id. → flat {id, json, last_used, …} oldest first
/// ('' = missing, or no `last_used` field).
pub(super) const KEYS_CREATED_BY: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGE', p .. 'creator_keys:' .. ARGV[2], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local k = redis.call('HMGET', p .. 'key:' .. id, 'json', 'last_used')
  out[#out + 1] = id
  out[#out + 1] = k[1] or ''
  out[#out + 1] = k[2] or ''
end
return out
"#;

/// `ARGV`: prefix, id, org, creator, listed ('1' unless deleted), json, has idempotency
/// key ('1'/'0'), idempotency key, version, hashes (hex)… → {'created'} |
/// {'replay', id} | {'exists'} | {'hash_taken'}.
pub(super) const CREATE_KEY: &str = r#"
local p, id, org, creator, listed, json, has_ik, ik, version =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local hashes = {}
for i = 10, #ARGV do hashes[#hashes + 1] = ARGV[i] end
if has_ik == '1' then
  local existing = redis.call('HGET', p .. 'idempotency:' .. org, ik)
  if existing then return {'replay', existing} end
end
local k = p .. 'key:' .. id
if redis.call('EXISTS', k) == 1 then return {'exists'} end
local seen = {}
for _, h in ipairs(hashes) do
  if seen[h] or redis.call('HEXISTS', p .. 'key_hashes', h) == 1 then return {'hash_taken'} end
  seen[h] = true
end
for _, h in ipairs(hashes) do redis.call('HSET', p .. 'key_hashes', h, id) end
redis.call('HSET', k, 'json', json, 'org', org, 'creator', creator, 'hashes', table.concat(hashes, ','),
  'version', version)
if listed == '1' then redis.call('ZADD', p .. 'org_keys:' .. org, 0, id) end
redis.call('ZADD', p .. 'creator_keys:' .. creator, 0, id)
if has_ik == '1' then redis.call('HSET', p .. 'idempotency:' .. org, ik, id) end
return {'created'}
"#;

/// `ARGV`: prefix, id, org, creator, listed, json, expected stored json, expected
/// version, hashes… → {'updated'} | {'missing'} | {'stale', stored version} |
/// {'changed'} | {'hash_taken'} | {'corrupt'}.
///
/// Compare-and-swap on the record's version (the `version` field, '0' for records
/// written before versions). `changed`: the version is the expected one but the JSON is
/// not the one the caller read (to carry its `last_used_at` over): a keygate from
/// before the `last_used` field ([`TOUCH_KEYS`]) touched the key in between, as it
/// may during a rolling upgrade, and the caller reads again and retries.
///
/// Hashes the record no longer has are dropped from the index only if they point at
/// this key, so a stale entry can never unindex another key's secret. The change is
/// published on the invalidation channel in the same step (every old and new hash, with
/// the new version), so that it reaches every replica even if the caller never hears
/// back.
pub(super) const UPDATE_KEY: &str = r#"
local p, id, org, creator, listed, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local expected = tonumber(ARGV[8])
local k = p .. 'key:' .. id
local old = redis.call('HMGET', k, 'org', 'creator', 'hashes', 'json', 'version')
if redis.call('EXISTS', k) == 0 then return {'missing'} end
if not old[1] or not old[2] or not old[3] then return {'corrupt'} end
local stored = tonumber(old[5] or '0')
if stored ~= expected then return {'stale', tostring(stored)} end
if old[4] ~= ARGV[7] then return {'changed'} end
local version = tostring(expected + 1)
local new, is_new = {}, {}
for i = 9, #ARGV do
  local h = ARGV[i]
  local owner = redis.call('HGET', p .. 'key_hashes', h)
  if owner and owner ~= id then return {'hash_taken'} end
  new[#new + 1] = h
  is_new[h] = true
end
local msg = {'i'}
for h in string.gmatch(old[3], '[^,]+') do
  if not is_new[h] then
    msg[#msg + 1] = h .. '@' .. version
    if redis.call('HGET', p .. 'key_hashes', h) == id then
      redis.call('HDEL', p .. 'key_hashes', h)
    end
  end
end
for _, h in ipairs(new) do
  redis.call('HSET', p .. 'key_hashes', h, id)
  msg[#msg + 1] = h .. '@' .. version
end
redis.call('HSET', k, 'json', json, 'org', org, 'creator', creator, 'hashes', table.concat(new, ','),
  'version', version)
redis.call('ZREM', p .. 'org_keys:' .. old[1], id)
if listed == '1' then redis.call('ZADD', p .. 'org_keys:' .. org, 0, id) end
if old[2] ~= creator then
  redis.call('ZREM', p .. 'creator_keys:' .. old[2], id)
  redis.call('ZADD', p .. 'creator_keys:' .. creator, 0, id)
end
redis.call('PUBLISH', p .. 'invalidations', table.concat(msg, ' '))
return {'updated'}
"#;

/// `ARGV`: prefix, id, json, expected version. → {'updated'} | {'missing'} |
/// {'stale', stored version}.
///
/// Compare-and-swap on the org's version. A change of `key_policy` (the only org field
/// the data plane reads through keys) is published as `o <id>` in the same step.
pub(super) const UPDATE_ORG: &str = r#"
local p, id, json, expected = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local old = redis.call('HGET', p .. 'orgs', id)
if not old then return {'missing'} end
local o, n = cjson.decode(old), cjson.decode(json)
local stored = tonumber(o.version or 0)
if stored ~= expected then return {'stale', tostring(stored)} end
redis.call('HSET', p .. 'orgs', id, json)
if (o.key_policy or 'org') ~= (n.key_policy or 'org') then
  redis.call('PUBLISH', p .. 'invalidations', 'o ' .. id)
end
return {'updated'}
"#;

/// `ARGV`: prefix, id, token hash, json, version. → 1 stored | 0 a principal exists
/// already.
///
/// The emptiness check and the write are one script: of several replicas starting at
/// once against an empty Redis, exactly one creates the owner.
pub(super) const CREATE_FIRST_PRINCIPAL: &str = r#"
local p, id, token, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('ZCARD', p .. 'principals') > 0 then return 0 end
redis.call('HSET', p .. 'principal:' .. id, 'json', json, 'token', token, 'version', ARGV[5])
redis.call('HSET', p .. 'principal_tokens', token, id)
redis.call('ZADD', p .. 'principals', 0, id)
return 1
"#;

/// `ARGV`: prefix, id, token hash, json, version. → 1 created | 0 the id exists |
/// -1 the token is held by another principal.
pub(super) const CREATE_PRINCIPAL: &str = r#"
local p, id, token, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = p .. 'principal:' .. id
if redis.call('EXISTS', k) == 1 then return 0 end
if redis.call('HEXISTS', p .. 'principal_tokens', token) == 1 then return -1 end
redis.call('HSET', p .. 'principal_tokens', token, id)
redis.call('HSET', k, 'json', json, 'token', token, 'version', ARGV[5])
redis.call('ZADD', p .. 'principals', 0, id)
return 1
"#;

/// `ARGV`: prefix, id, token hash, json, expected version. → {'updated'} |
/// {'missing'} | {'stale', stored version} | {'token_taken'}.
///
/// Compare-and-swap on the principal's version. A rotated token stops resolving in the
/// same step. A change of `disabled` or `deleted_at` (what `key_policy: creator` reads)
/// is published as `p <id>` in the same step.
pub(super) const UPDATE_PRINCIPAL: &str = r#"
local p, id, token, json, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local k = p .. 'principal:' .. id
local cur = redis.call('HMGET', k, 'json', 'token', 'version')
if not cur[1] then return {'missing'} end
local stored = tonumber(cur[3] or '0')
if stored ~= expected then return {'stale', tostring(stored)} end
local owner = redis.call('HGET', p .. 'principal_tokens', token)
if owner and owner ~= id then return {'token_taken'} end
local old = cur[2]
if old and old ~= token and redis.call('HGET', p .. 'principal_tokens', old) == id then
  redis.call('HDEL', p .. 'principal_tokens', old)
end
redis.call('HSET', p .. 'principal_tokens', token, id)
redis.call('HSET', k, 'json', json, 'token', token, 'version', tostring(expected + 1))
local function away(j)
  local d = cjson.decode(j)
  return d.disabled == true or (d.deleted_at ~= nil and d.deleted_at ~= cjson.null)
end
if away(cur[1]) ~= away(json) then
  redis.call('PUBLISH', p .. 'invalidations', 'p ' .. id)
end
return {'updated'}
"#;

/// `ARGV`: prefix, token hash. → nil | {id} (record missing) | {id, json}.
pub(super) const PRINCIPAL_BY_TOKEN: &str = r#"
local p = ARGV[1]
local id = redis.call('HGET', p .. 'principal_tokens', ARGV[2])
if not id then return false end
local json = redis.call('HGET', p .. 'principal:' .. id, 'json')
if not json then return {id} end
return {id, json}
"#;

/// `ARGV`: prefix. → flat {id, json, …} in id order ('' = missing).
pub(super) const LIST_PRINCIPALS: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGE', p .. 'principals', 0, -1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', p .. 'principal:' .. id, 'json') or ''
end
return out
"#;

/// `ARGV`: prefix, id, json, org ('' = none). → 1 stored | 0 id exists.
pub(super) const APPEND_AUDIT: &str = r#"
local p, id, json, org = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HSETNX', p .. 'audit', id, json) == 0 then return 0 end
if org ~= '' then redis.call('ZADD', p .. 'org_audit:' .. org, 0, id) end
return 1
"#;

/// `ARGV`: prefix, schema version. → the stored version (set to ours if there was none).
pub(super) const SCHEMA: &str = r#"
local p = ARGV[1]
local v = redis.call('HGET', p .. 'meta', 'schema_version')
if v then return v end
redis.call('HSET', p .. 'meta', 'schema_version', ARGV[2])
return ARGV[2]
"#;

/// `ARGV`: prefix, then per key: id, time (Unix nanoseconds, decimal, no sign or
/// leading zeros). → how many keys moved.
///
/// A key's `last_used_at` as the data plane sees it is kept in the `last_used` field of
/// its `key:<id>` hash, beside the record's JSON, not in it: a touch is then one field
/// write, which never changes the record, its version or its JSON, so it cannot race
/// an admin write's compare-and-swap. Readers take the later of the field and the
/// JSON's own `last_used_at` (written before the field existed). The field only moves
/// forward (equal-length decimals compare as strings), and a key whose record is gone
/// gets none.
pub(super) const TOUCH_KEYS: &str = r#"
local p = ARGV[1]
local moved = 0
for i = 2, #ARGV - 1, 2 do
  local k = p .. 'key:' .. ARGV[i]
  local at = ARGV[i + 1]
  local cur = redis.call('HGET', k, 'last_used')
  local later
  if cur then
    later = #cur < #at or (#cur == #at and cur < at)
  else
    later = redis.call('HEXISTS', k, 'json') == 1
  end
  if later then
    redis.call('HSET', k, 'last_used', at)
    moved = moved + 1
  end
end
return moved
"#;

/// `ARGV`: prefix, batch id, part number, parts in the batch (on its last part; '0'
/// on the others), now (Unix seconds), resources kept per hour, then per row: key id,
/// hour (Unix seconds), field count n, n × (field, increment). → 1 applied | 0 the part
/// was applied before.
///
/// A batch is applied in parts, each at most once: a part is marked applied in
/// `usage_batches` as `<batch id>.<part>`, and the last part replaces those marks with
/// the batch id alone, so a batch leaves one mark however many parts it had.
///
/// Each `usage:<key>:<hour>` hash holds the counters flat: `requests`, `successes`,
/// `client_errors`, `upstream_errors`, `rate_limited`, `d:<code>`, `r:<route>`,
/// `s:<resource>`. A row enters the indexes (`usage_hours:<key>`, `usage_keys:<hour>`,
/// `usage_index_hours`) when its hash is created, not again on every later batch. (The
/// pruning index is a set per hour, not one sorted set of every key-hour: a sorted-set
/// insert among millions of members cost ~5 µs, about a third of a new row.) After a
/// row is added, resources beyond the hour's top `cap` (most requested first, ties by
/// name) are folded into `s:other`, as `UsageCounts::cap_resources` does.
pub(super) const ADD_USAGE: &str = r#"
local p, batch, part, parts = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local marks = p .. 'usage_batches'
if redis.call('ZSCORE', marks, batch) or redis.call('ZSCORE', marks, batch .. '.' .. part) then
  return 0
end
local other = 's:other'
local i = 7
while i <= #ARGV do
  local key, hour, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local h = p .. 'usage:' .. key .. ':' .. hour
  local fresh = redis.call('EXISTS', h) == 0
  local touched = false
  for j = 0, n - 1 do
    local f = ARGV[i + 3 + 2 * j]
    redis.call('HINCRBY', h, f, ARGV[i + 4 + 2 * j])
    if string.sub(f, 1, 2) == 's:' then touched = true end
  end
  i = i + 3 + 2 * n
  if fresh then
    redis.call('ZADD', p .. 'usage_hours:' .. key, hour, hour)
    redis.call('SADD', p .. 'usage_keys:' .. hour, key)
    redis.call('ZADD', p .. 'usage_index_hours', hour, hour)
  end
  if touched then
    local flat = redis.call('HGETALL', h)
    local named = {}
    for j = 1, #flat, 2 do
      local f = flat[j]
      if string.sub(f, 1, 2) == 's:' and f ~= other then
        named[#named + 1] = {f, tonumber(flat[j + 1])}
      end
    end
    if #named > cap then
      table.sort(named, function(a, b)
        if a[2] ~= b[2] then return a[2] > b[2] end
        return a[1] < b[1]
      end)
      local rest = 0
      for j = cap + 1, #named do
        rest = rest + named[j][2]
        redis.call('HDEL', h, named[j][1])
      end
      redis.call('HINCRBY', h, other, rest)
    end
  end
end
if parts > 0 then
  for j = 0, parts - 1 do redis.call('ZREM', marks, batch .. '.' .. j) end
  redis.call('ZADD', marks, now, batch)
else
  redis.call('ZADD', marks, now, batch .. '.' .. part)
end
return 1
"#;

/// `ARGV`: prefix, key id, from, to (Unix seconds, `to` exclusive). → {{hour, field,
/// value, field, value…}, …} oldest first.
pub(super) const USAGE: &str = r#"
local p, key = ARGV[1], ARGV[2]
local hours = redis.call('ZRANGEBYSCORE', p .. 'usage_hours:' .. key, ARGV[3], '(' .. ARGV[4])
local out = {}
for _, hour in ipairs(hours) do
  local row = {hour}
  local flat = redis.call('HGETALL', p .. 'usage:' .. key .. ':' .. hour)
  for _, v in ipairs(flat) do row[#row + 1] = v end
  out[#out + 1] = row
end
return out
"#;

/// `ARGV`: prefix, before (Unix seconds, exclusive), forget batches before (Unix
/// seconds). → the number of key-hours deleted.
///
/// Rows are found through the sets `usage_keys:<hour>`, and through `usage_all`, where
/// keygates before December 2026 indexed them (`<hour>:<key id>`) and an older replica
/// still may during a rolling upgrade; a row is counted once, when its hash is deleted.
pub(super) const PRUNE_USAGE: &str = r#"
local p, before, forget = ARGV[1], ARGV[2], ARGV[3]
local pruned = 0
local function drop(key, hour)
  pruned = pruned + redis.call('DEL', p .. 'usage:' .. key .. ':' .. hour)
  redis.call('ZREM', p .. 'usage_hours:' .. key, hour)
end
for _, hour in ipairs(redis.call('ZRANGEBYSCORE', p .. 'usage_index_hours', '-inf', '(' .. before)) do
  local keys = p .. 'usage_keys:' .. hour
  for _, key in ipairs(redis.call('SMEMBERS', keys)) do drop(key, hour) end
  redis.call('DEL', keys)
  redis.call('ZREM', p .. 'usage_index_hours', hour)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p .. 'usage_all', '-inf', '(' .. before)) do
  local sep = string.find(m, ':', 1, true)
  drop(string.sub(m, sep + 1), string.sub(m, 1, sep - 1))
  redis.call('ZREM', p .. 'usage_all', m)
end
redis.call('ZREMRANGEBYSCORE', p .. 'usage_batches', '-inf', '(' .. forget)
return pruned
"#;

/// `ARGV`: prefix, then per window counter: name suffix, limit, expire at (Unix
/// seconds), tokens wanted (≥ 1). → {granted (1/0), then per counter: tokens granted,
/// counter value after}, in argument order.
///
/// Leases tokens of fixed windows, all or nothing: only if every counter has room
/// (`used < limit`) does each grant `min(wanted, limit - used)` and count it; otherwise
/// nothing is counted anywhere. A counter counts every token granted (used by a
/// request, or held by a replica until used or refunded), so no window ever grants past
/// its limit, whatever the number of replicas calling. With every `wanted` = 1 this is
/// the exact per-request check-and-count.
pub(super) const LEASE_WINDOWS: &str = r#"
local p = ARGV[1]
local n = (#ARGV - 1) / 4
local used, ok = {}, 1
for i = 0, n - 1 do
  local b = 2 + 4 * i
  used[i + 1] = tonumber(redis.call('GET', p .. ARGV[b]) or '0')
  if used[i + 1] >= tonumber(ARGV[b + 1]) then ok = 0 end
end
local out = {ok}
for i = 0, n - 1 do
  local b = 2 + 4 * i
  local g = 0
  if ok == 1 then
    g = math.min(tonumber(ARGV[b + 3]), tonumber(ARGV[b + 1]) - used[i + 1])
    redis.call('INCRBY', p .. ARGV[b], g)
    redis.call('EXPIREAT', p .. ARGV[b], ARGV[b + 2])
  end
  out[#out + 1] = g
  out[#out + 1] = used[i + 1] + g
end
return out
"#;

/// `ARGV`: prefix, counter name suffix, tokens. → tokens given back.
///
/// Gives back tokens a replica leased and did not use: never takes a counter below
/// zero, and does nothing to a counter that has expired (its window is over).
pub(super) const REFUND_WINDOW: &str = r#"
local k = ARGV[1] .. ARGV[2]
local n = math.min(tonumber(ARGV[3]), tonumber(redis.call('GET', k) or '0'))
if n > 0 then redis.call('DECRBY', k, n) end
return n
"#;
