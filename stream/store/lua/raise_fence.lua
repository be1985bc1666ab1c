--[[
raise_fence.lua -- bring one shard's fence up to the published versions.

KEYS[1]  the shard's fence hash (v = thresholds version, mv = CLV model version)
ARGV[1]  published thresholds version    ARGV[2]  published model version
Returns  1

Invariant kept atomically: a fence field only rises. Once it holds version n, commit.lua
rejects every batch in this shard scored against an older version, so a refresh that raises
all fences before it scans the indexes sees every customer an old version could have placed.
A stale publisher replaying an old version changes nothing.
--]]

local function raise(field, value)
  if tonumber(redis.call('HGET', KEYS[1], field) or '0') < tonumber(value) then
    redis.call('HSET', KEYS[1], field, value)
  end
end
raise('v', ARGV[1])
raise('mv', ARGV[2])
return 1
