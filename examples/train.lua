--- examples/train.lua - train a face-verification DenseNet from the shell:
-- the same as `bin/faceid train` (see `faceid train --help`; `--input` is
-- accepted for `--size`).
--
--   lua5.4 examples/train.lua --data ../shared/data/att_faces --net small --size 32 \
--       --steps 300 --batch 16 --out run/att
--   lua5.4 examples/train.lua --resume run/att/last.safetensors --data ../shared/data/att_faces \
--       --net small --size 32 --steps 600 --batch 16 --out run/att
--
-- The loop itself is faceid.train.run (lua/faceid/train.lua): copy it to
-- change the recipe; examples/custom_schedule.lua drives it from Lua.
local cli = require("faceid.cli")
os.exit(cli.main({ "train", table.unpack(arg or {}) }))
