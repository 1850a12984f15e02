--- examples/demo.lua - the demo, as `make demo` runs it: the same as
-- `bin/faceid demo [options]` (see `faceid demo --help`). It trains a small
-- DenseNet for a few minutes on the AT&T faces (or, without face data, on a
-- generated set of SYNTHETIC identities), evaluates it on people held out
-- of training, prints the metrics and writes pictures to demo-out/.
-- The pixel-space baseline it used to be is examples/eigenfaces.lua.
--
-- Usage: lua5.4 examples/demo.lua [--minutes 3 | --steps N] [--data DIR|synthetic] [--out demo-out]
local cli = require("faceid.cli")
os.exit(cli.main({ "demo", table.unpack(arg or {}) }))
