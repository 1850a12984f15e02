-- The pixel-space eigenfaces baseline (examples/eigenfaces.lua) end to end,
-- on the synthetic faces so that it runs the same everywhere: it must
-- finish, beat chance on held-out people and write readable pictures. The
-- DenseNet demo itself (`faceid demo`) is covered by spec/cli_spec.lua.
local faceid = require("faceid")
local helper = require("helper")

describe("examples/eigenfaces.lua", function()
  it("verifies held-out synthetic people above chance and writes its pictures", function()
    local out = helper.tmpdir()
    local cmd = ("env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s;;' "
      .. "lua5.4 examples/eigenfaces.lua /nonexistent-data '%s' 2>&1"):format(package.cpath:match("^[^;]+"), out)
    local p = assert(io.popen(cmd))
    local text = p:read("a")
    local ok = p:close()
    assert.is_true(ok, text)
    assert.truthy(text:find("SYNTHETIC faces", 1, true), text)
    local acc = tonumber(text:match("24 eigenfaces%s+[%d.]+%s+([%d.]+)%%"))
    assert.is_not_nil(acc, text)
    assert.is_true(acc > 60, text)
    for _, name in ipairs({ "faces.png", "eigenfaces.png" }) do
      local img = assert(faceid.image.load(out .. "/" .. name))
      assert.are.equal(3, img:size(1))
      assert.is_true(img:size(2) > 50 and img:size(3) > 50)
    end
    helper.rmtree(out)
  end)
end)
