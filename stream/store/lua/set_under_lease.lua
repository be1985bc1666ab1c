--[[
set_under_lease.lua -- write a key only while holding the refresh lease.

KEYS[1]  refresh lease (string holding the holder's token)   KEYS[2]  the key to set
ARGV[1]  lease token of the caller                           ARGV[2]  the value
Returns  1 when written, 0 when the caller no longer holds the lease

Invariant kept atomically: only the current lease holder records a result (the configuration
fingerprint), so a worker that lost the lease mid-way cannot claim work it did not finish.
--]]

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
