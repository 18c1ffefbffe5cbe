-- Lease up to n jobs to a worker (ARGV worker is informational), after moving at most `batch` due scheduled
-- jobs to pending and at most `batch` lapsed leases back (no unbounded work).
-- KEYS[1] = {q}:pending
-- ARGV: prefix, n, worker, visibility ms, batch, dead retention ms
-- Returns { more, next_due_ms, jobs } where jobs is flat:
--   id, lease generation, payload, attempts (this delivery included), max attempts, created ms
-- `more` = 1 when a batch limit was hit (call again), next_due_ms = -1 when nothing is waiting.
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local worker = ARGV[3]
local vt = tonumber(ARGV[4])
local batch = tonumber(ARGV[5])
local dead_ret = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending = prefix .. ':pending'
local scheduled = prefix .. ':scheduled'
local leased = prefix .. ':leased'
local stats = prefix .. ':stats'

local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(due) do
  redis.call('ZREM', scheduled, id)
  local jk = prefix .. ':job:' .. id
  if redis.call('HGET', jk, 'state') == 'scheduled' then
    redis.call('HSET', jk, 'state', 'pending', 'ready_at', now)
    redis.call('RPUSH', pending, id)
  end
end

local lapsed = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(lapsed) do
  redis.call('ZREM', leased, id)
  local jk = prefix .. ':job:' .. id
  local f = redis.call('HMGET', jk, 'attempts', 'max', 'state', 'idem', 'gen')
  -- every member of `leased` is a live lease (each lease end removes it);
  -- skip only jobs whose data is gone
  if f[3] then
    -- the lapsed delivery counts as an attempt; a new generation makes the
    -- old holder's outcome stale
    local attempts = (tonumber(f[1]) or 0) + 1
    local next_gen = (tonumber(f[5]) or 0) + 1
    redis.call('HINCRBY', stats, 'lapsed', 1)
    local why = 'lease lapsed: the worker stopped renewing it'
    if attempts >= (tonumber(f[2]) or 1) then
      redis.call('HSET', jk, 'state', 'dead', 'error', why, 'done_at', now,
        'attempts', attempts, 'gen', next_gen)
      redis.call('ZADD', prefix .. ':dead', now, id)
      redis.call('PEXPIRE', jk, dead_ret)
      if f[4] and f[4] ~= '' then
        local ik = prefix .. ':idem:' .. f[4]
        if redis.call('GET', ik) == id then redis.call('DEL', ik) end
      end
    else
      redis.call('HSET', jk, 'state', 'pending', 'error', why, 'attempts', attempts, 'gen', next_gen)
      redis.call('LPUSH', pending, id)
    end
  end
end

local jobs = {}
local lease = {}
if n > 1000 then n = 1000 end
if n > 0 then
  local ids = redis.call('LPOP', pending, n)
  if ids then
    local expiry = now + vt
    for _, id in ipairs(ids) do
      local jk = prefix .. ':job:' .. id
      local f = redis.call('HMGET', jk, 'payload', 'attempts', 'max', 'created', 'state', 'gen')
      if f[1] and f[5] == 'pending' then
        -- The hash is not written here: membership of `leased` is what makes
        -- the job running, `gen` (bumped whenever a lease ends) is the lease
        -- token, and the attempt is recorded when the lease ends.
        local attempts = (tonumber(f[2]) or 0) + 1
        local gen = tonumber(f[6]) or 0
        lease[#lease + 1] = expiry
        lease[#lease + 1] = id
        jobs[#jobs + 1] = id
        jobs[#jobs + 1] = gen
        jobs[#jobs + 1] = f[1]
        jobs[#jobs + 1] = attempts
        jobs[#jobs + 1] = f[3]
        jobs[#jobs + 1] = f[4]
      end
    end
  end
end
-- at most 2000 values in one unpack (n is capped at 1000)
if #lease > 0 then redis.call('ZADD', leased, unpack(lease)) end

-- more work left: pass the wake-up on to the next idle worker
if redis.call('LLEN', pending) > 0 and redis.call('LLEN', prefix .. ':wake') == 0 then
  redis.call('RPUSH', prefix .. ':wake', 1)
end

local next_due = -1
local s = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
if s[2] then next_due = math.max(0, tonumber(s[2]) - now) end
local l = redis.call('ZRANGE', leased, 0, 0, 'WITHSCORES')
if l[2] then
  local d = math.max(0, tonumber(l[2]) - now)
  if next_due < 0 or d < next_due then next_due = d end
end
local more = 0
if #due == batch or #lapsed == batch then more = 1 end
return { more, next_due, jobs }
