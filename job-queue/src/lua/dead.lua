-- Re-drive (ARGV[2] = 'retry') or purge (ARGV[2] = 'purge') dead jobs.
-- KEYS[1] = {q}:dead
-- ARGV: prefix, action, then job ids (the caller sends bounded batches)
-- Returns the number of jobs acted on.
local prefix = ARGV[1]
local action = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = 0
local wake = false
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = prefix .. ':job:' .. id
  local removed = redis.call('ZREM', prefix .. ':dead', id)
  local st = redis.call('HGET', jk, 'state')
  if st == 'dead' then
    if action == 'retry' then
      redis.call('PERSIST', jk)
      redis.call('HSET', jk, 'state', 'pending', 'attempts', 0, 'ready_at', now)
      redis.call('HINCRBY', jk, 'gen', 1)
      local idem = redis.call('HGET', jk, 'idem')
      if idem and idem ~= '' then
        redis.call('SET', prefix .. ':idem:' .. idem, id, 'NX')
      end
      redis.call('RPUSH', prefix .. ':pending', id)
      wake = true
    else
      redis.call('DEL', jk)
    end
    count = count + 1
  elseif removed == 1 and action == 'purge' then
    count = count + 1
  end
end
if wake and redis.call('LLEN', prefix .. ':wake') == 0 then
  redis.call('RPUSH', prefix .. ':wake', 1)
end
return count
