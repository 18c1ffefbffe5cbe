-- Push jobs, each stored at most once while pending, scheduled or running.
-- KEYS[1] = {q}:pending (routing only; every key shares its hash tag)
-- ARGV[1] = key prefix, ARGV[2] = job count n, ARGV[3] = '1' to check ids that
-- the client generated (a retry after a lost answer), '0' to trust them fresh,
-- then per job: id, idempotency key ('' for none), payload, max attempts, delay ms,
-- '1' if the client generated the id.
-- Returns, per job: 1 (stored) or 0 (duplicate), then the id holding the job.
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending = prefix .. ':pending'
local scheduled = prefix .. ':scheduled'
local active = { pending = true, scheduled = true, running = true }
local out = {}
local ready_ids = {}
local stored, dups, woken = 0, 0, false
-- one RPUSH per slice of at most 1000 ids (never an unbounded unpack)
local function rpush_all(key, ids)
  for i = 1, #ids, 1000 do
    redis.call('RPUSH', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end
local check_generated = ARGV[3] == '1'
for i = 0, n - 1 do
  local b = 4 + i * 6
  local id, idem, payload, max, delay, generated =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5] == '1'
  local dup = nil
  if idem ~= '' then
    local holder = redis.call('GET', prefix .. ':idem:' .. idem)
    if holder then
      local st = redis.call('HGET', prefix .. ':job:' .. holder, 'state')
      if st and active[st] then dup = holder end
    end
  end
  local jk = prefix .. ':job:' .. id
  local old_gen = nil
  -- a fresh ULID cannot exist yet: skip the lookup unless this is a retry
  if not dup and (check_generated or not generated) then
    local st = redis.call('HGET', jk, 'state')
    if st and active[st] then
      dup = id
    elseif st then
      -- a finished job of the same id: start a new life, keeping the
      -- generation counter so no outcome of the old life can match
      old_gen = redis.call('HGET', jk, 'gen')
      redis.call('ZREM', prefix .. ':done', id)
      redis.call('ZREM', prefix .. ':dead', id)
      redis.call('DEL', jk)
    end
  end
  if dup then
    dups = dups + 1
    out[#out + 1] = 0
    out[#out + 1] = dup
  else
    stored = stored + 1
    local state = 'pending'
    if delay > 0 then state = 'scheduled' end
    -- attempts and gen start absent (= 0); ready_at absent means `created`
    if idem ~= '' then
      redis.call('HSET', jk, 'payload', payload, 'state', state, 'max', max, 'created', now, 'idem', idem)
      redis.call('SET', prefix .. ':idem:' .. idem, id)
    else
      redis.call('HSET', jk, 'payload', payload, 'state', state, 'max', max, 'created', now)
    end
    if old_gen then redis.call('HSET', jk, 'gen', tonumber(old_gen) + 1) end
    if delay > 0 then
      redis.call('HSET', jk, 'ready_at', now + delay)
      redis.call('ZADD', scheduled, now + delay, id)
    else
      ready_ids[#ready_ids + 1] = id
    end
    -- wake an idle worker: to run it, or to learn the new due time
    woken = true
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
rpush_all(pending, ready_ids)
if woken and redis.call('LLEN', prefix .. ':wake') == 0 then
  redis.call('RPUSH', prefix .. ':wake', 1)
end
if stored > 0 then redis.call('HINCRBY', prefix .. ':stats', 'pushed', stored) end
if dups > 0 then redis.call('HINCRBY', prefix .. ':stats', 'duplicates', dups) end
return out
