--[[
positions.lua -- what one shard holds of the input positions, and which server holds it.

KEYS[1]  the shard's positions hash (field "<topic>:<partition>" -> the next offset to read)
ARGV     the fields to read
Returns  the server's run id, then each field's position ("" = none), in ARGV order

The run id goes back to advance_positions.lua after the batch: a server that restarted in
between is caught even when the position it kept is the one read here.
--]]

local out = {string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')}
local values = redis.call('HMGET', KEYS[1], unpack(ARGV))
for i = 1, #ARGV do
  out[i + 1] = values[i] or ''
end
return out
