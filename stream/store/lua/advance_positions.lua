--[[
advance_positions.lua -- record how far each input partition has been applied, in one shard.

KEYS[1]  the shard's positions hash (field "<topic>:<partition>" -> the next offset to read)
ARGV[1]  the server's run id as read before the batch was applied (positions.lua), "" = none
ARGV[2..] one triple per partition, flat: field, expected, new
           expected  the position this worker last knew the hash to hold for the field
                     ("" = none known: a partition it has not seen a position for)
           new       the next offset to read once the batch just applied is counted
Returns  the run id, then flat pairs field, stored ("" = none) for every partition this
         shard refuses to advance, each left as it is:
         - all of them when the run id is not ARGV[1]: the server restarted (or a replica
           took over) while the batch was applied, and may have lost its commits while
           keeping the position written before them;
         - those whose stored position is behind ``expected`` (or gone): the shard lost
           writes it had acknowledged, and the commits before them with those writes.

Invariant: a stored position P of partition p means every event of p before P has its
commit in this shard. The worker calls this only once all the batch's commits were
acknowledged by the server it read before the batch, and Redis persists (AOF, RDB
snapshot, a replica's stream) a prefix of each instance's command history, so a recovered
shard that holds P also holds every commit acknowledged before P was written. Positions
only rise: a slower writer (a worker whose partition was just revoked) lowers nothing. On a
cluster a partition's safe position is the lowest over the shards, which is why every
shard is advanced for every batch.
--]]

local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local moved = ARGV[1] ~= '' and ARGV[1] ~= run
local out = {run}
for i = 2, #ARGV, 3 do
  local field, expected, new = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local raw = redis.call('HGET', KEYS[1], field)
  local stored = raw and tonumber(raw)
  if moved or (expected ~= '' and (not stored or stored < tonumber(expected))) then
    out[#out + 1] = field
    out[#out + 1] = raw or ''
  elseif not stored or new > stored then
    redis.call('HSET', KEYS[1], field, new)
  end
end
return out
