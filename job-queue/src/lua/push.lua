-- Push jobs, each stored at most once while pending, scheduled or running.
-- KEYS[1] = {q}:pending (routing only; every key shares its hash tag)
-- ARGV[1] = key prefix, ARGV[2] = job count n,
-- then per job: id, idempotency key ('' for none), payload, max attempts, delay ms.
-- Returns, per job: 1 (stored) or 0 (duplicate), then the id holding the job.
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending = prefix .. ':pending'
local scheduled = prefix .. ':scheduled'
local active = { pending = true, scheduled = true, running = true }
local out = {}
local ready, stored, dups = 0, 0, 0
for i = 0, n - 1 do
  local b = 3 + i * 5
  local id, idem, payload, max, delay =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local dup = nil
  if idem ~= '' then
    local holder = redis.call('GET', prefix .. ':idem:' .. idem)
    if holder then
      local st = redis.call('HGET', prefix .. ':job:' .. holder, 'state')
      if st and active[st] then dup = holder end
    end
  end
  local jk = prefix .. ':job:' .. id
  if not dup then
    local st = redis.call('HGET', jk, 'state')
    if st and active[st] then
      dup = id
    elseif st then
      -- a finished job of the same id: start a new life
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
    redis.call('HSET', jk, 'payload', payload, 'state', state, 'attempts', 0, 'max', max,
      'created', now, 'ready_at', now + delay, 'gen', 0, 'idem', idem)
    if idem ~= '' then redis.call('SET', prefix .. ':idem:' .. idem, id) end
    if delay > 0 then
      redis.call('ZADD', scheduled, now + delay, id)
      -- wake an idle worker so it learns the new due time
      ready = ready + 1
    else
      redis.call('RPUSH', pending, id)
      ready = ready + 1
    end
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
if ready > 0 and redis.call('LLEN', prefix .. ':wake') == 0 then
  redis.call('RPUSH', prefix .. ':wake', 1)
end
if stored > 0 then redis.call('HINCRBY', prefix .. ':stats', 'pushed', stored) end
if dups > 0 then redis.call('HINCRBY', prefix .. ':stats', 'duplicates', dups) end
return out
