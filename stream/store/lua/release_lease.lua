--[[
release_lease.lua -- release the refresh lease only if we still hold it.

KEYS[1]  lease key      ARGV[1]  our token
Returns  1 released, 0 someone else holds it (ours expired): never delete another's lease.
--]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
