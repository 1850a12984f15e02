--- examples/train.lua - train a face-verification DenseNet from the shell.
--
--   lua5.4 examples/train.lua --data ../shared/data/celeba_subset --input 64 \
--       --net small --minutes 30 --out run/celeba
--   lua5.4 examples/train.lua --resume run/celeba/last.safetensors --data ... --out run/celeba
--
-- Every option maps to faceid.train.run (see lua/faceid/train.lua, whose
-- run() is the loop itself: copy it to change the recipe).
local faceid = require("faceid")

local usage = [[
usage: lua5.4 examples/train.lua --data DIR [options]
  --data DIR         face folder: CelebA layout, one folder per person, or Yale
  --net NAME         densenet121 (default) or small (k=12, blocks 6,6,6, small stem)
  --input N          image side (default 128; 64 is 4x faster)
  --embedding N      embedding size (32)
  --batch N          pairs per step (64)
  --steps N | --epochs N | --minutes M   how long to train (default 10 epochs)
  --lr X             base learning rate (3e-4) ; --optimizer adam|sgd
  --schedule NAME    seed (default), one_cycle, cosine, constant
  --holdout X        people held out for evaluation: fraction or count (0.2)
  --eval-every N     steps between evaluations (200); --eval-pairs N (1000)
  --checkpoint-every N  steps between checkpoints (500)
  --out DIR          where last.safetensors, best.safetensors, log.csv go
  --resume FILE      continue a run from its checkpoint
  --seed N --threads N --no-augment
]]

local args, i = {}, 1
while arg[i] do
  local a = arg[i]
  if a == "-h" or a == "--help" then
    io.write(usage)
    os.exit(0)
  elseif a == "--no-augment" then
    args.no_augment = true
    i = i + 1
  elseif a:match("^%-%-") and arg[i + 1] then
    args[a:sub(3):gsub("%-", "_")] = arg[i + 1]
    i = i + 2
  else
    io.stderr:write("examples/train.lua: bad argument '" .. a .. "'\n" .. usage)
    os.exit(2)
  end
end
if not args.data then
  io.stderr:write("examples/train.lua: --data is required\n" .. usage)
  os.exit(2)
end

local function num(name, default)
  local v = args[name]
  args[name] = nil
  if v == nil then return default end
  local n = tonumber(v)
  if not n then
    io.stderr:write(("examples/train.lua: --%s wants a number, got '%s'\n"):format(name:gsub("_", "-"), v))
    os.exit(2)
  end
  return math.tointeger(n) or n
end

local nets = {
  densenet121 = {},
  small = { growth = 12, blocks = { 6, 6, 6 }, bottleneck = 4, stem = "small" },
}
local netname = args.net or "densenet121"
args.net = nil
if not nets[netname] then
  io.stderr:write("examples/train.lua: --net must be densenet121 or small\n")
  os.exit(2)
end

local opts = {
  data = args.data, out = args.out, resume = args.resume, net = nets[netname],
  optimizer = args.optimizer or "adam", schedule = args.schedule or "seed",
  input = num("input", 128), embedding = num("embedding", 32), batch = num("batch", 64),
  steps = num("steps", nil), epochs = num("epochs", nil), lr = num("lr", 3e-4),
  holdout = num("holdout", 0.2), eval_every = num("eval_every", 200), eval_pairs = num("eval_pairs", 1000),
  checkpoint_every = num("checkpoint_every", 500), seed = num("seed", 0), threads = num("threads", 2),
  augment = args.no_augment and false or nil,
}
local minutes = num("minutes", nil)
for _, k in ipairs({ "data", "out", "resume", "optimizer", "schedule", "no_augment" }) do args[k] = nil end
local extra = next(args)
if extra then
  io.stderr:write(("examples/train.lua: unknown option --%s\n"):format(extra:gsub("_", "-")))
  os.exit(2)
end

if minutes then
  opts.minutes = minutes
  opts.steps = opts.steps or 1000000 -- the budget decides
end

local r = faceid.train.run(opts)
if r.eval then
  print(("held-out people: AUC %.4f, best-threshold accuracy %.4f (threshold %.3f), EER %.4f, TAR@FAR=1e-3 %.4f")
    :format(r.eval.auc, r.eval.best_accuracy, r.eval.best_threshold, r.eval.eer, r.eval.tar))
end
