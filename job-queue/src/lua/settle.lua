-- Settle leased jobs: done, retry, dead or release. An outcome whose lease
-- generation is no longer current (the lease lapsed and the job went to
-- someone else) is rejected and counted as a stale ack.
-- KEYS[1] = {q}:pending
-- ARGV: prefix, n, done retention ms, dead retention ms,
-- then per outcome: id, generation, kind, delay ms, error text; last ARGV: worker name
--   kind: d = done, r = retry after delay, x = dead,
--         l = release unstarted (attempt undone), a = release started (attempt kept)
-- Returns, per outcome, 1 (applied) or 0 (stale).
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local done_ret = tonumber(ARGV[3])
local dead_ret = tonumber(ARGV[4])
local worker = ARGV[#ARGV]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending = prefix .. ':pending'
local leased = prefix .. ':leased'
local stats = prefix .. ':stats'
local day = 'day:' .. math.floor(now / 86400000)
local out = {}
local wake = false
local unleased = {}
local finished = {}
local function bulk(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local done, retried, dead, stale = 0, 0, 0, 0

local function release_idem(idem, id)
  if idem and idem ~= '' then
    local ik = prefix .. ':idem:' .. idem
    if redis.call('GET', ik) == id then redis.call('DEL', ik) end
  end
end

for i = 0, n - 1 do
  local b = 5 + i * 5
  local id, gen, kind, delay, err = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  local jk = prefix .. ':job:' .. id
  local f = redis.call('HMGET', jk, 'gen', 'state', 'idem', 'attempts')
  -- the generation moves on whenever a lease ends, so a match means this
  -- lease is still the current one
  if (f[1] or '0') ~= gen or not f[2] then
    stale = stale + 1
    out[#out + 1] = 0
  else
    unleased[#unleased + 1] = id
    -- a new generation: any later outcome for this lease is stale
    local next_gen = (tonumber(f[1]) or 0) + 1
    -- the delivery counts as an attempt unless it never started
    local attempts = (tonumber(f[4]) or 0) + 1
    if kind == 'd' then
      redis.call('HSET', jk, 'state', 'done', 'done_at', now, 'gen', next_gen,
        'attempts', attempts, 'worker', worker)
      finished[#finished + 1] = now
      finished[#finished + 1] = id
      redis.call('PEXPIRE', jk, done_ret)
      release_idem(f[3], id)
      done = done + 1
    elseif kind == 'r' then
      retried = retried + 1
      if delay > 0 then
        redis.call('HSET', jk, 'state', 'scheduled', 'error', err, 'ready_at', now + delay,
          'gen', next_gen, 'attempts', attempts, 'worker', worker)
        redis.call('ZADD', prefix .. ':scheduled', now + delay, id)
      else
        redis.call('HSET', jk, 'state', 'pending', 'error', err, 'ready_at', now,
          'gen', next_gen, 'attempts', attempts, 'worker', worker)
        redis.call('RPUSH', pending, id)
      end
      wake = true
    elseif kind == 'x' then
      redis.call('HSET', jk, 'state', 'dead', 'error', err, 'done_at', now,
        'gen', next_gen, 'attempts', attempts, 'worker', worker)
      redis.call('ZADD', prefix .. ':dead', now, id)
      redis.call('PEXPIRE', jk, dead_ret)
      release_idem(f[3], id)
      dead = dead + 1
    else
      if kind == 'l' then attempts = attempts - 1 end
      if err ~= '' then redis.call('HSET', jk, 'error', err) end
      redis.call('HSET', jk, 'state', 'pending', 'gen', next_gen, 'attempts', attempts, 'worker', worker)
      redis.call('LPUSH', pending, id)
      wake = true
    end
    out[#out + 1] = 1
  end
end

bulk('ZREM', leased, unleased)
bulk('ZADD', prefix .. ':done', finished)
redis.call('ZREMRANGEBYSCORE', prefix .. ':done', '-inf', now - done_ret)
redis.call('ZREMRANGEBYSCORE', prefix .. ':dead', '-inf', now - dead_ret)
if done > 0 then
  redis.call('HINCRBY', stats, 'completed', done)
  redis.call('HINCRBY', stats, day, done)
end
if retried > 0 then redis.call('HINCRBY', stats, 'retried', retried) end
if dead > 0 then redis.call('HINCRBY', stats, 'died', dead) end
if stale > 0 then redis.call('HINCRBY', stats, 'stale_acks', stale) end
if wake and redis.call('LLEN', prefix .. ':wake') == 0 then
  redis.call('RPUSH', prefix .. ':wake', 1)
end
return out
