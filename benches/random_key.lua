-- wrk script for benches/redis_load.sh: every request carries a token drawn at random
-- (uniformly) from the file named by the first script argument, one token per line.
-- Usage: wrk -s benches/random_key.lua URL -- TOKENS_FILE
local tokens = {}

function init(args)
    local f = assert(io.open(args[1], "r"), "cannot read the tokens file")
    for line in f:lines() do
        tokens[#tokens + 1] = line
    end
    f:close()
    assert(#tokens > 0, "the tokens file is empty")
    -- Each wrk thread draws its own sequence.
    math.randomseed(os.time() + #tostring({}))
end

function request()
    return wrk.format("GET", nil, {
        ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["Accept"] = "application/json",
    })
end
