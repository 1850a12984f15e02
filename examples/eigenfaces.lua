--- examples/eigenfaces.lua - a face-verification baseline built only from
-- the tensor and image API: load faces (AT&T when ../shared/data is present, else a synthetic set that
-- says so), learn "eigenfaces" from the training people with sgemm and
-- orthogonal iteration, then verify pairs of people never seen when the
-- statistics were computed: is the distance below a threshold chosen on
-- the training people? Writes demo-out/faces.png and demo-out/eigenfaces.png.
-- (`faceid demo` trains the DenseNet that this baseline is a yardstick for.)
--
-- Usage: lua5.4 examples/eigenfaces.lua [data_root] [out_dir]
local faceid = require("faceid")
local synthetic = require("faceid.synthetic")
local image = faceid.image

local data_root = arg and arg[1] or os.getenv("FACEID_DATA") or "../shared/data"
local out_dir = arg and arg[2] or "demo-out"
local H, W = 28, 23 -- AT&T faces are 112x92: a quarter of each side
local TRAIN_PEOPLE, PER_PERSON = 30, 10
local gen = faceid.Generator(2018)

local function printf(...)
  io.write(string.format(...))
  io.flush()
end

-- ---- data ------------------------------------------------------------------

local function load_att(root)
  local dir = root .. "/att_faces"
  if not io.open(dir .. "/s1/1.pgm", "rb") then return nil end
  local people = {}
  for p = 1, 40 do
    local imgs = {}
    for i = 1, PER_PERSON do
      local path = ("%s/s%d/%d.pgm"):format(dir, p, i)
      local img = assert(image.load(path, { channels = 1 }))
      imgs[i] = image.resize(img, H, W)
    end
    people[p] = imgs
  end
  return people, "AT&T / ORL faces (40 people x 10 photos, " .. dir .. ")"
end

-- Synthetic identities (faceid.synthetic): face-like layouts, one per
-- person, photographed with shifts, light and noise. Labelled SYNTHETIC.
local function synthetic_people(n)
  local people = synthetic.people({ people = n, per_person = PER_PERSON, height = H, width = W,
    channels = 1, seed = 2018 })
  return people, ("%s (%d generated identities x %d photos; no face data found under %s)")
    :format(synthetic.LABEL, n, PER_PERSON, data_root)
end

-- ---- features ----------------------------------------------------------------

-- rows of a matrix: one flattened image per row
local function matrix_of(people, first, last)
  local rows, owner = {}, {}
  for p = first, last do
    for _, img in ipairs(people[p]) do
      rows[#rows + 1] = img:reshape(1, H * W)
      owner[#rows] = p
    end
  end
  return faceid.cat(rows, 1), owner
end

-- Orthonormalise the columns of q (d x k) in place: modified Gram-Schmidt.
local function orthonormalise(q)
  local k = q:size(2)
  for j = 1, k do
    local col = q:narrow(2, j, 1)
    for i = 1, j - 1 do
      local prev = q:narrow(2, i, 1)
      local proj = faceid.matmul(prev:t(), col):get(1, 1)
      col:axpy_(prev, -proj)
    end
    col:div_(col:norm())
  end
  return q
end

-- Top-k principal directions of the centred rows of x (n x d), by
-- orthogonal iteration on the covariance C = x^T x / n.
local function eigenfaces(x, k, iters)
  local n = x:size(1)
  local cov = faceid.matmul(x:t(), x):div_(n)
  local q = orthonormalise(faceid.randn(gen, x:size(2), k))
  for _ = 1, iters do
    q = orthonormalise(faceid.matmul(cov, q))
  end
  return q
end

-- embeddings: project, then scale to unit length
local function embed(x, mean, basis)
  local centred = x - mean -- (n x d) - (1 x d) broadcasts
  local e = basis and faceid.matmul(centred, basis) or centred
  for i = 1, e:size(1) do
    local row = e[i]
    row:div_(row:norm() + 1e-12)
  end
  return e
end

-- ---- verification --------------------------------------------------------------

-- all same-person pairs among the given rows, and as many different-person
-- pairs drawn at random; returns { {i, j, same}, ... }
local function make_pairs(owner)
  local pairs_, same = {}, 0
  for i = 1, #owner do
    for j = i + 1, #owner do
      if owner[i] == owner[j] then
        pairs_[#pairs_ + 1] = { i, j, true }
        same = same + 1
      end
    end
  end
  local diff = 0
  while diff < same do
    local i, j = gen:random(#owner), gen:random(#owner)
    if owner[i] ~= owner[j] then
      pairs_[#pairs_ + 1] = { i, j, false }
      diff = diff + 1
    end
  end
  return pairs_
end

local function distances(e, pairs_)
  local d = {}
  for k, pr in ipairs(pairs_) do
    d[k] = (e[pr[1]] - e[pr[2]]):norm()
  end
  return d
end

local function accuracy(d, pairs_, threshold)
  local right = 0
  for k, pr in ipairs(pairs_) do
    if (d[k] < threshold) == pr[3] then right = right + 1 end
  end
  return right / #pairs_
end

local function best_threshold(d, pairs_)
  local sorted = {}
  for k = 1, #d do sorted[k] = d[k] end
  table.sort(sorted)
  local best, best_t = -1, 0
  for k = 1, #sorted do
    local t = k < #sorted and (sorted[k] + sorted[k + 1]) / 2 or sorted[k] + 1e-6
    local a = accuracy(d, pairs_, t)
    if a > best then best, best_t = a, t end
  end
  return best_t, best
end

-- ---- pictures --------------------------------------------------------------------

-- a grid of 1xHxW images (values mapped to [0,1] per image when `stretch`)
local function sheet(imgs, cols, stretch)
  local rows = math.ceil(#imgs / cols)
  local pad = 2
  local canvas = faceid.ones(1, rows * (H + pad) + pad, cols * (W + pad) + pad)
  for i, img in ipairs(imgs) do
    local r, c = (i - 1) // cols, (i - 1) % cols
    local cell = canvas:narrow(2, pad + 1 + r * (H + pad), H):narrow(3, pad + 1 + c * (W + pad), W)
    local v = img:reshape(1, H, W)
    if stretch then
      local lo, hi = v:min(), v:max()
      v = (v - lo) / math.max(hi - lo, 1e-12)
    end
    cell:copy(v)
  end
  return image.resize(canvas, canvas:size(2) * 3, canvas:size(3) * 3)
end

-- ---- main --------------------------------------------------------------------------

local t0 = os.clock()
local people, source = load_att(data_root)
if not people then people, source = synthetic_people(40) end
printf("faceid %s eigenfaces: pixel-space face verification with the tensor and image API\n", faceid._VERSION)
printf("data: %s\n", source)
printf("images resized to %dx%d; people 1-%d give the statistics, people %d-%d are held out\n",
  H, W, TRAIN_PEOPLE, TRAIN_PEOPLE + 1, #people)

local xtrain, otrain = matrix_of(people, 1, TRAIN_PEOPLE)
local xtest, otest = matrix_of(people, TRAIN_PEOPLE + 1, #people)
local mean = xtrain:mean(1, true)
local basis = eigenfaces(xtrain - mean, 24, 30)

local ptrain, ptest = make_pairs(otrain), make_pairs(otest)
printf("pairs: %d from training people (threshold), %d from held-out people (test), half same-person\n",
  #ptrain, #ptest)
printf("%-26s %10s %14s %14s\n", "embedding", "threshold", "held-out acc", "best possible")
local results = {}
for _, method in ipairs({ { "raw pixels (unit length)", nil }, { "24 eigenfaces", basis } }) do
  local etrain, etest = embed(xtrain, mean, method[2]), embed(xtest, mean, method[2])
  local thr = best_threshold(distances(etrain, ptrain), ptrain)
  local dtest = distances(etest, ptest)
  local acc = accuracy(dtest, ptest, thr)
  local _, best = best_threshold(dtest, ptest)
  printf("%-26s %10.3f %13.1f%% %13.1f%%\n", method[1], thr, 100 * acc, 100 * best)
  results[#results + 1] = acc
end
printf("chance is 50.0%%; a trained DenseNet embedding is what faceid is for (see README)\n")

os.execute("mkdir -p '" .. out_dir .. "'")
local faces = {}
for p = TRAIN_PEOPLE + 1, #people do
  for i = 1, 3 do faces[#faces + 1] = people[p][i] end
end
assert(image.save(sheet(faces, 6, false), out_dir .. "/faces.png"))
local efaces = {}
for j = 1, 12 do efaces[j] = basis:narrow(2, j, 1):contiguous() end
assert(image.save(sheet(efaces, 6, true), out_dir .. "/eigenfaces.png"))
printf("wrote %s/faces.png (held-out people, 3 photos each) and %s/eigenfaces.png\n", out_dir, out_dir)
printf("done in %.1f s of CPU\n", os.clock() - t0)
return results
