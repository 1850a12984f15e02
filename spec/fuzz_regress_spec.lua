-- Inputs the fuzzers (fuzz/) found crashing or misbehaving, kept after the
-- fix: each must now be refused with a message through the Lua API, the
-- same way twice (stb_image 2.27 read these from uninitialised memory, so
-- a wrong answer could differ between calls). spec/fixtures/fuzz/<target>/
local faceid = require("faceid")
local helper = require("helper")

local root = "spec/fixtures/fuzz"

local function files(target)
  local p = io.popen(("ls '%s/%s' 2>/dev/null"):format(root, target))
  local list = {}
  for name in p:lines() do list[#list + 1] = name end
  p:close()
  return list
end

describe("fuzz findings", function()
  it("images: each is refused with a message, by decode and info alike", function()
    local list = files("image")
    assert.is_true(#list >= 3, "the kept image inputs are missing")
    -- what each was, and what the refusal must say
    local want = {
      ["jpeg-dht-256-codes.jpg"] = "Huffman table of more than 256 codes",
      ["jpeg-undefined-huffman-table.jpg"] = "undefined",
      ["jpeg-uncoded-component.jpg"] = "corrupt JPEG",
    }
    for _, name in ipairs(list) do
      local bytes = helper.read_file(root .. "/image/" .. name)
      for _, c in ipairs({ 3, 1, 3 }) do
        local img, err = faceid.core.image_decode(bytes, c)
        assert.is_nil(img, name .. " decoded")
        assert.is_string(err)
        assert.truthy(err:find(want[name] or "", 1, true), name .. ": " .. err)
      end
      local info, err = faceid.core.image_info(bytes)
      assert.is_nil(info, name)
      assert.is_string(err)
    end
  end)

  it("safetensors: each is refused with a message", function()
    for _, name in ipairs(files("safetensors")) do
      local t, err = faceid.load_bytes(helper.read_file(root .. "/safetensors/" .. name))
      assert.is_nil(t, name)
      assert.is_string(err)
    end
  end)
end)
