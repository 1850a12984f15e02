-- Build and install: the C core compiles without warnings, and the rock
-- installs offline with LuaRocks into a fresh tree and loads from there.
local helper = require("helper")

local function run(cmd)
  -- without the sanitizer runtime that `make sanitize` preloads into lua5.4
  local quoted = "'" .. cmd:gsub("'", "'\\''") .. "'"
  local p = assert(io.popen("env -u LD_PRELOAD -u MAKEFLAGS -u MAKELEVEL sh -c " .. quoted .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

describe("build", function()
  it("compiles with -O2 -Wall -Wextra and no warnings", function()
    local dir = helper.tmpdir()
    local ok, out = run("make -s BUILD=" .. dir .. " CFLAGS=-O2 all")
    helper.rmtree(dir)
    assert.is_true(ok, out)
    assert.is_nil(out:find("warning", 1, true), out)
  end)

  it("installs offline with luarocks make into a fresh tree", function()
    if not have("luarocks") then
      pending("luarocks is not installed")
      return
    end
    local tree = helper.tmpdir()
    local ok, out = run("luarocks --lua-version=5.4 --tree=" .. tree .. " make faceid-scm-1.rockspec")
    assert.is_true(ok, out)
    assert.truthy(out:find("faceid scm-1 is now installed", 1, true), out)
    -- load it from outside the source tree, with only the rock tree on the path
    local script = [[print(require("faceid")._VERSION, require("faceid").ones(2, 2):sum(),
      package.searchpath("faceid.core", package.cpath))]]
    ok, out = run(("cd /tmp && eval \"$(luarocks --lua-version=5.4 --tree=%s path)\" && lua5.4 -e '%s'")
      :format(tree, script))
    helper.rmtree(tree)
    assert.is_true(ok, out)
    local version, sum, where = out:match("^(%S+)\t(%S+)\t(%S+)")
    assert.are.equal(require("faceid")._VERSION, version)
    assert.are.equal("4.0", sum)
    assert.truthy(where:find(tree, 1, true), where)
  end)
end)
