-- wrk script for benches/redis_load.sh --only memory: every request carries the next
-- token of the file named by the first script argument (one per line), in order, so
-- that a run walks every key once before repeating any. Use one wrk thread.
-- A second argument starts the walk after that many tokens (where an earlier run
-- stopped). Usage: wrk -t1 -s benches/each_key.lua URL -- TOKENS_FILE [START]
local tokens = {}
local next_index = 0

function init(args)
    local f = assert(io.open(args[1], "r"), "cannot read the tokens file")
    for line in f:lines() do
        tokens[#tokens + 1] = line
    end
    f:close()
    assert(#tokens > 0, "the tokens file is empty")
    next_index = (tonumber(args[2]) or 0) % #tokens
end

function request()
    next_index = next_index % #tokens + 1
    return wrk.format("GET", nil, {
        ["Authorization"] = "Bearer " .. tokens[next_index],
        ["Accept"] = "application/json",
    })
end
