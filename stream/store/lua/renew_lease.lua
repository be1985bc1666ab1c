--[[
renew_lease.lua -- extend the refresh lease, only for its current holder.

KEYS[1]  refresh lease (string holding the holder's token)
ARGV[1]  lease token of the caller
ARGV[2]  new time to live, ms

Returns  1 renewed; 0 the caller no longer holds the lease.

Invariant: a lease is only ever extended by the holder whose token it stores, so a holder
whose lease expired can never prolong a successor's lease (compare and expire in one step).
--]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
