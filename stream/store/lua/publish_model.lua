--[[
publish_model.lua -- publish a newly fitted CLV model, fenced by the refresh lease.

KEYS[1]  thresholds hash (fields: mv = model version, model = JSON of the fitted model,
         checks = JSON of that fit's model checks, unfit = why the last fit published
         nothing: cleared here)
KEYS[2]  refresh lease (string holding the holder's token)
KEYS[3]  model history (list, newest first: "<version> <JSON>", the last 50 kept for audit)
ARGV[1]  lease token of the caller
ARGV[2]  model version the caller read
ARGV[3]  JSON document of the model
ARGV[4]  JSON document of its checks (stream.clv.checks), written in the same step so a
         reader never sees one fit's parameters with another fit's checks
ARGV[5]  the highest model version any shard's fence holds (0 = none known); the new
         version is one above both it and ARGV[2]

Returns  the new version; -1 lease lost; -2 another model was published meanwhile.

Invariant: model versions only rise, by one unless a fence is ahead, and only the lease
holder that read the latest version can publish; since commits that depend on the model are
fenced on ``mv``, no customer keeps a churn flag computed from a model that has been
replaced. A fence ahead holds a version that a rollback of Redis lost after commits used
it: publishing above it keeps their number from naming a second version.
--]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local v = tonumber(redis.call('HGET', KEYS[1], 'mv') or '0')
if v ~= tonumber(ARGV[2]) then
  return -2
end
v = math.max(v, tonumber(ARGV[5])) + 1
redis.call('HSET', KEYS[1], 'mv', tostring(v), 'model', ARGV[3], 'checks', ARGV[4])
redis.call('HDEL', KEYS[1], 'unfit')
redis.call('LPUSH', KEYS[3], tostring(v) .. ' ' .. ARGV[3])
redis.call('LTRIM', KEYS[3], 0, 49)
return v
