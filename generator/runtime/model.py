# Triton Python-backend model written by gen-repo. This file is static: every per-model fact
# (artifact, loader, hash, threads) comes from the `parameters` of config.pbtxt.
#
# One forward pass per execute(): the requests Triton hands over are grouped by their non-batch
# shapes, concatenated along the batch axis, run once, and split back. A request that makes the
# model raise gets an error response; the instance stays up.
#
# SECURITY: a torch.package archive or TorchScript file is code, and loading it runs it. This
# model refuses an artifact whose SHA-256 differs from the one recorded at build time, but a
# model repository must still only ever come from a trusted source.

import ctypes
import hashlib
import importlib
import importlib.machinery
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

try:  # absent when gen-repo's offline check imports this file outside the server
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - exercised by the offline check
    pb_utils = None

PACKAGE_RESOURCE = ("model", "model.pkl")  # (package, resource) of the pickled model


class ArtifactError(RuntimeError):
    pass


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_package(path, device):
    importer = torch.package.PackageImporter(str(path))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        model = importer.load_pickle(*PACKAGE_RESOURCE, map_location=device)
    return model.eval()


def _assign_mapped_weights(model, path, want, device):
    """Give ``model`` (its weights meta tensors, as the build pickled it) the weights of
    ``path``, mapped read-only: the instances of the model on this machine share their pages."""
    if not path.is_file():
        raise ArtifactError(f"weights file {path} is missing")
    got = sha256_of(path)
    if got != want:
        raise ArtifactError(
            f"weights file {path} has SHA-256 {got}, but the build recorded {want or 'none'}:"
            " the file was changed or damaged after the build. Rebuild the model with gen-repo"
            " build.")
    state = torch.load(str(path), mmap=True, weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device) if str(device) != "cpu" else model


def _load_torchscript(path, device):
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    import torchvision  # noqa: F401  registers torchvision's TorchScript ops (nms, roi_align)

    return torch.jit.load(str(path), map_location=device).eval()


def _load_aoti(path, device):
    """The AOTInductor package, called with the inputs in config order: by keyword when it was
    exported with keyword inputs (gen-repo's packages are), else by position."""
    import torch._inductor

    index = device.index if getattr(device, "type", "cpu") == "cuda" else -1
    package = torch._inductor.aoti_load_package(str(path), device_index=index or -1)
    _, tree = json.loads(package.loader.get_call_spec()[0])  # (args, kwargs) of forward()
    kwargs = tree["children_spec"][1]
    names = json.loads(kwargs["context"]) if kwargs["children_spec"] else []
    return (lambda *tensors: package(**dict(zip(names, tensors)))) if names else package


# torchvision imports torch._dynamo (1 s of a 2.6 s instance load on 2 cores) for one function
# its roi_align calls, and an eager forward pass never reads it: the import of that package is
# put off until something imports it or reads a module of DEFERRED. DEFERRED: the modules that
# get a stand-in meanwhile, and the functions of each that may be imported from it.
DEFERRED_PACKAGE = "torch._dynamo"
DEFERRED = {"torch._dynamo.utils": ("is_compile_supported",)}
DEFERRED_IMPORTS, AT_LOAD = "deferred_imports", "false"  # config parameter: imports at load


def _end_deferral():
    """Take the stand-ins and their finder out: the next import of the package is the real one."""
    for name in DEFERRED:
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _EndDeferral)]


def _imported(name):
    """The real module ``name``, imported now if it is not yet."""
    module = sys.modules.get(name)
    if module is not None and not isinstance(module, _Deferred):
        return module
    _end_deferral()
    return importlib.import_module(name)


def _later(module, name):
    def call(*args, **kwargs):
        return getattr(_imported(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _spec(name):
    """Where ``name`` would be imported from, found without importing it or its packages."""
    parent = name.rpartition(".")[0]
    where = (sys.modules[parent].__path__ if parent in sys.modules
             else _spec(parent).submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec(name, where)


class _EndDeferral:
    """First of sys.meta_path while the stand-ins are in sys.modules: an import of the deferred
    package or of any module in it ends the deferral before the import system looks for it, so
    the package and its modules are imported once, for real, in their usual order."""

    def find_spec(self, name, path=None, target=None):
        if name == DEFERRED_PACKAGE or name.startswith(DEFERRED_PACKAGE + "."):
            _end_deferral()
        return None


class _Deferred(type(sys)):
    """Stands in sys.modules for a module of DEFERRED, with its spec and file: reading another
    attribute it lacks imports the real module and reads it there, but for dunder names (what
    tools such as inspect probe on every module) other than ``__all__``."""

    def __init__(self, name, spec):
        super().__init__(name)
        self.__spec__, self.__loader__, self.__file__ = spec, spec.loader, spec.origin
        self.__package__ = spec.parent
        for function in DEFERRED[name]:
            setattr(self, function, _later(name, function))

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__") and attr != "__all__":
            raise AttributeError(attr)
        return getattr(_imported(self.__name__), attr)


def defer_imports(params=None):
    """Put stand-ins for DEFERRED in sys.modules, unless the config ``params`` ask for every
    import at load, the package is imported already, or a module of DEFERRED cannot be found
    where the path finder looks (then nothing is deferred)."""
    if (params or {}).get(DEFERRED_IMPORTS) == AT_LOAD:
        return
    if DEFERRED_PACKAGE in sys.modules or any(name in sys.modules for name in DEFERRED):
        return
    try:
        specs = {name: _spec(name) for name in DEFERRED}
    except (AttributeError, ImportError, KeyError):  # a package not found on the path
        return
    if any(spec is None or spec.origin is None for spec in specs.values()):
        return
    for name, spec in specs.items():
        sys.modules[name] = _Deferred(name, spec)
    sys.meta_path.insert(0, _EndDeferral())


LOADERS = {"package": _load_package, "torchscript": _load_torchscript, "aoti": _load_aoti}
SAMPLES_FILE = "gen_repo_samples.npz"  # beside config.pbtxt; used to warm up compiled models


def as_model_receives(array, input_config, batching):
    """``array``, shaped as a client sends it, shaped as Triton hands it to the model.

    Triton replaces the dims after the batch dim of an input that has a config ``reshape`` with
    the reshape's shape, each -1 of it taking the size of the request's next -1 axis (Triton core,
    InferenceRequest::Normalize). A per-row scalar (``dims: [1] reshape { shape: [] }``): the
    client sends [B, 1], the model gets [B].
    """
    reshape = input_config.get("reshape")
    if reshape is None:
        return array
    lead = tuple(array.shape[:1]) if batching else ()
    dims = [int(d) for d in input_config.get("dims", [])]
    sizes = iter([n for n, d in zip(array.shape[len(lead):], dims) if d == -1])
    shape = tuple(next(sizes) if int(d) == -1 else int(d) for d in reshape.get("shape", []))
    return array.reshape(lead + shape)


def _warm_up_inputs(version_dir, inputs, batch_size):
    """Sample inputs stored at build time (as clients send them), repeated/cut to
    ``batch_size`` rows (0 = as stored, no batching), shaped as the model receives them."""
    with np.load(Path(version_dir).parent / SAMPLES_FILE, allow_pickle=False) as data:
        arrays = [data[i["name"]] for i in inputs]
    if batch_size:
        arrays = [np.concatenate([a] * -(-batch_size // a.shape[0]))[:batch_size] for a in arrays]
    arrays = [as_model_receives(a, i, bool(batch_size)) for a, i in zip(arrays, inputs)]
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def compile_model(model, version_dir, params, inputs, device, log=print):
    """torch.compile the model and run it once per configured batch size, so that no request
    pays for compilation. Any failure falls back to the eager model, with the reason logged.
    ``inputs``: the config's input entries (name, dims, reshape)."""
    mode = params.get("compile_mode", "default")
    sizes = [int(b) for b in params.get("warmup_batch_sizes", "").split(",") if b] or [0]
    try:
        compiled = torch.compile(model, mode=None if mode == "default" else mode, dynamic=True)
        for size in sizes:
            tensors = _warm_up_inputs(version_dir, inputs, size)
            with forward_context(params.get(FORWARD_MODE)):
                run_batch(compiled, [t.to(device) for t in tensors])
        log(f"gen-repo: torch.compile (mode {mode}) warmed up for batch sizes {sizes}")
        return compiled
    except Exception as e:  # compilation is an optimisation: serve eager rather than fail
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        log(f"gen-repo: torch.compile failed, serving the eager model: {type(e).__name__}: {first}")
        return model


def load_model(version_dir, params, device="cpu", inputs=(), log=print):
    """Load the artifact named by the config parameters, after checking its SHA-256; compile
    and warm it up when the parameters ask for torch.compile. ``inputs``: the config's input
    entries (name, dims, optional reshape), as Triton's JSON model config spells them."""
    path = Path(version_dir) / params["artifact"]
    if not path.is_file():
        raise ArtifactError(f"artifact {path} is missing")
    defer_imports(params)
    want = params.get("artifact_sha256", "")
    got = sha256_of(path)
    if want and got != want:
        raise ArtifactError(
            f"artifact {path} has SHA-256 {got}, but the build recorded {want}: the file was"
            " changed or damaged after the build. Refusing to load it (loading runs its code)."
            " Rebuild the model with gen-repo build.")
    loader = LOADERS.get(params["loader"])
    if loader is None:
        raise ArtifactError(f"unknown loader {params['loader']!r}; known: {sorted(LOADERS)}")
    model = loader(path, device)
    if params.get("weights"):
        model = _assign_mapped_weights(model, Path(version_dir) / params["weights"],
                                       params.get("weights_sha256", ""), device)
    if params.get(MEMORY_FORMAT) == CHANNELS_LAST:
        model = to_channels_last(model)
    if params.get("compile_mode"):
        model = compile_model(model, version_dir, params, list(inputs), device, log)
    return model


MEASURED_THREADS = "measured_threads"  # config parameter: the build's timed choice
MEMORY_FORMAT, CHANNELS_LAST = "memory_format", "channels_last"  # likewise timed at build


def has_conv_weights(model) -> bool:
    """Whether the model holds 4-D weights (2-D convolutions): channels_last may speed it up."""
    return any(p.dim() == 4 for p in model.parameters())


def to_channels_last(model):
    """The eager model with its 4-D weights in channels_last layout: oneDNN's convolutions on
    CPU run faster on it (inputs stay as sent; the answers agree within float rounding, which the
    build checks). A tensor already in that layout is kept, not copied: weights mapped from a
    file stored in it stay the file's shared pages (``Module.to`` would copy every 1x1 kernel,
    whose strides after a load read as contiguous too)."""
    def convert(t):
        if t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last):
            return t
        return t.contiguous(memory_format=torch.channels_last)

    return model._apply(convert)


def threads_for(params, instance_groups):
    """Intra-op threads per instance: the configured number (``threads``); else this machine's
    share of cores (cores / CPU instances), capped by the count the build measured fastest
    (``measured_threads``: a number, or "share" when more threads kept helping)."""
    configured = int(params.get("threads", "0") or 0)
    if configured > 0:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu_instances = sum(int(g.get("count", 1)) for g in instance_groups
                        if g.get("kind") in ("KIND_CPU", 1)) or 1
    share = max(1, (cores or 1) // cpu_instances)
    measured = params.get(MEASURED_THREADS, "")
    return min(share, int(measured)) if measured.isdigit() and int(measured) > 0 else share


FORWARD_MODE = "forward_mode"  # config parameter: NO_GRAD for a model that needs autograd
INFERENCE_MODE, NO_GRAD = "inference_mode", "no_grad"


def forward_context(mode):
    """The context a forward pass runs in: torch.no_grad for ``mode`` NO_GRAD (a model that
    takes gradients inside forward(), which inference mode forbids), else torch.inference_mode."""
    return torch.no_grad() if mode == NO_GRAD else torch.inference_mode()


def fresh_tensors(arrays):
    """Tensors holding copies of ``arrays``: a model that changes its inputs in place
    (``x.sub_(mean)``) leaves the arrays as they were, for the next call."""
    return [torch.from_numpy(np.array(a, copy=True, order="C")) for a in arrays]


def to_numpy(tensor):
    """A tensor's values as a numpy array; bfloat16 as float32 (numpy has no bfloat16, and
    tritonclient carries BF16 tensors as float32 arrays too)."""
    t = tensor.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def c_order(tensor):
    """``tensor`` with the strides Triton's Python backend requires of a DLPack tensor: each the
    product of the sizes after it. torch calls a tensor contiguous whatever the strides of its
    size-1 and empty axes (an expanded view of no rows, say), and the backend refuses those."""
    strides, step = [], 1
    for size in reversed(tensor.shape):
        strides.append(step)
        step *= size
    strides = tuple(reversed(strides))
    if tensor.stride() == strides:
        return tensor
    if tensor.numel() == 0:
        return torch.empty_strided(tensor.shape, strides, dtype=tensor.dtype,
                                   device=tensor.device)
    return tensor.clone(memory_format=torch.contiguous_format)


def run_batch(model, tensors):
    """One forward pass; returns a list of output tensors in config order.

    In inference mode: entered here, unless this thread is in it already or has gradients off
    (a served instance enters its forward_context once, so that no request pays for it)."""
    if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
        out = model(*tensors)
    else:
        with torch.inference_mode():
            out = model(*tensors)
    if isinstance(out, torch.Tensor):
        return [out]
    return list(out)


def _slicing(seconds):
    """(slices, least calls per slice) for ``seconds`` per setting: the time of one setting is
    cut into slices and the best slice counts. A short look (under a second per setting) takes 2
    slices of at least 1 call, so a big model at batch 8 costs a few forward passes, not a dozen."""
    return (4, 3) if seconds >= 1 else (2, 1)


def time_forward(model, tensors, seconds, run=run_batch):
    """(calls, seconds, per-call times) of the fastest slice of ``seconds`` of forward passes
    (after a warm-up of a tenth of them): the in-process ceiling's and the build's thread choice's
    one timing loop.

    The best slice, not the mean: what the machine can do, on a machine that other work shares
    (a slice that coincides with a burst of that work says nothing about the model).
    """
    slices, least = _slicing(seconds)
    warm_until = time.perf_counter() + seconds / 10
    for i in range(1000):  # warm-up: first calls allocate and (TorchScript) optimise
        run(model, tensors)
        if i + 1 >= least and time.perf_counter() >= warm_until:
            break
    best = None
    for _ in range(slices):
        times = []
        start = time.perf_counter()
        while True:
            t = time.perf_counter()
            run(model, tensors)
            times.append(time.perf_counter() - t)
            if time.perf_counter() - start >= seconds / slices and len(times) >= least:
                break
        sliced = (len(times), time.perf_counter() - start, times)
        if best is None or sliced[0] / sliced[1] > best[0] / best[1]:
            best = sliced
    return best


RELEASE_IDLE_MS = "release_idle_ms"  # config parameter: idle time before freed memory is released
DEFAULT_RELEASE_IDLE_MS = 1000


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _mkl_free_buffers():
    """MKL's ``mkl_free_buffers`` as torch's CPU library exports it (``mkl_serv_free_buffers``),
    or None where torch is built without MKL. MKL keeps the work buffers of its routines for
    reuse (resnet50 in channels_last layout on one thread: ~25 MiB after its first forward pass)."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        free = lib.mkl_serv_free_buffers
    except (OSError, AttributeError):
        return None
    free.argtypes, free.restype = [], None
    return free


def release_memory():
    """Frees MKL's kept work buffers, then gives the heap's free pages back to the OS; None where
    the C library has no malloc_trim."""
    trim, free = _malloc_trim(), _mkl_free_buffers()
    if trim is None:
        return None

    def release():
        if free is not None:
            free()
        trim(0)
    return release


class IdleRelease:
    """Gives the memory that forward passes freed or kept for reuse back to the OS
    (``release_memory``) once the instance has had no request for ``idle_s`` seconds, and once
    right away (what loading left). glibc keeps freed activations in its heap, so an instance
    otherwise holds the peak of every batch size it ever ran (resnet50 after batches 1..8: ~2x
    its weights) while it idles. Releasing after every request would slow the next one down
    (resnet18 at batch 1: ~10 % here); after idle time it costs a busy instance nothing. A
    release and a request never run at once (MKL's buffers must not be freed under a running
    routine): a request that arrives during a release waits for it. ``idle_s`` <= 0: never."""

    def __init__(self, idle_s: float, release=None):
        self._idle_s = idle_s
        self._last = time.monotonic()
        self._running = threading.Lock()  # held by a request, or by a release
        self._ended = threading.Event()  # a request ended since the last release
        self._stop = threading.Event()
        self._release = None
        if idle_s <= 0:
            return
        self._release = release if release is not None else release_memory()
        if self._release is None:
            return
        self.release()
        threading.Thread(target=self._run, name="gen-repo-idle-release", daemon=True).start()

    def release(self):
        with self._running:
            self._release()

    def busy(self):
        self._running.acquire()

    def done(self):
        self._last = time.monotonic()
        self._running.release()
        self._ended.set()

    def stop(self):
        self._stop.set()
        self._ended.set()

    def _run(self):
        while not self._stop.is_set():
            self._ended.wait()
            while not self._stop.is_set():
                left = self._idle_s - (time.monotonic() - self._last)
                if left <= 0 and self._running.acquire(blocking=False):
                    try:
                        if not self._stop.is_set():
                            self._ended.clear()
                            self._release()
                    finally:
                        self._running.release()
                    break
                self._stop.wait(left if left > 0 else self._idle_s)


def group_by_shape(arrays_per_request):
    """Indices of requests whose inputs have equal non-batch shapes and dtypes, in arrival order."""
    groups = {}
    for i, arrays in enumerate(arrays_per_request):
        key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def declared_dims(output_config: dict) -> list[int]:
    """The shape the config declares for an output as the model returns it (after the batch
    axis): its reshape's shape when it has one, else its dims."""
    reshape = output_config.get("reshape")
    dims = reshape.get("shape", []) if reshape is not None else output_config.get("dims", [])
    return [int(d) for d in dims]


def shape_contradiction(name: str, dims: list[int], shape: tuple, batching: bool) -> str | None:
    """Why an output of ``shape`` contradicts the ``dims`` its config declares (-1: any size),
    or None: the server would send a shape its own metadata does not allow."""
    got = shape[1:] if batching else shape
    if len(got) == len(dims) and all(d == -1 or d == n for d, n in zip(dims, got)):
        return None
    return (f"output '{name}' has shape {list(got)} here, and this model's config declares"
            f" {dims} (-1: any size): the build saw that size at every input it ran, but these"
            " inputs give another one, so the answer would contradict the model's metadata;"
            " rebuild with --example-inputs whose answers differ in that size, and the config"
            " declares the axis variable (-1)")


class TritonPythonModel:
    _idle = IdleRelease(0)  # until initialize() starts this instance's own: never releases

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}
        self.params = params
        self.batching = int(self.config.get("max_batch_size", 0)) > 0
        self.input_names = [i["name"] for i in self.config["input"]]
        self.output_names = [o["name"] for o in self.config["output"]]
        self.output_dims = [declared_dims(o) for o in self.config["output"]]
        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        threads = threads_for(params, self.config.get("instance_group", []))
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # already set in this process
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.logger = pb_utils.Logger
        self.model = load_model(version_dir, params, self.device, self.config["input"],
                                self.logger.log_info)
        # Every request runs in inference mode (no_grad where the build found the model needs
        # autograd): entered once on the thread that serves them (the stub calls initialize and
        # execute on one thread; run_batch enters inference mode per call where not).
        self._forward_context = forward_context(params.get(FORWARD_MODE))
        self._forward_context.__enter__()
        self._idle = IdleRelease(
            int(params.get(RELEASE_IDLE_MS, DEFAULT_RELEASE_IDLE_MS) or 0) / 1000)
        self.logger.log_info(
            f"gen-repo: {args['model_name']} instance {args['model_instance_name']} loaded"
            f" {params['artifact']} ({params['loader']}) on {self.device}, {threads} threads")

    # -- request handling ----------------------------------------------------------------------
    def _inputs_of(self, request):
        arrays = []
        for name in self.input_names:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                raise ValueError(f"input '{name}' is missing")
            if t.is_cpu():
                arr = t.as_numpy()
                if arr.dtype == np.object_:
                    raise ValueError(f"input '{name}' is BYTES; this model takes numbers")
                arrays.append(arr)
            else:
                arrays.append(torch.utils.dlpack.from_dlpack(t.to_dlpack()))
        if self.batching:
            sizes = {a.shape[0] for a in arrays}
            if len(sizes) != 1:
                raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)}")
        return arrays

    def _to_torch(self, arrays):
        out = []
        for a in arrays:
            t = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
            out.append(t.to(self.device, non_blocking=True) if t.device != self.device else t)
        return out

    def _response(self, outputs):
        for name, dims, t in zip(self.output_names, self.output_dims, outputs):
            wrong = shape_contradiction(name, dims, tuple(t.shape), self.batching)
            if wrong:
                raise ValueError(wrong)
        tensors = []
        for name, t in zip(self.output_names, outputs):
            if t.dtype == torch.bool:  # through numpy: DLPack's bool is not read everywhere
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(t.cpu().numpy())))
            else:  # DLPack: no numpy array in between (also GPU and bfloat16 tensors)
                tensors.append(pb_utils.Tensor.from_dlpack(
                    name, torch.utils.dlpack.to_dlpack(c_order(t))))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_merged(self, per_request):
        """Forward several requests as one batch (a copy of their inputs, concatenated);
        returns one response per request."""
        sizes = [a[0].shape[0] for a in per_request]
        merged = [np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)
                  for parts in zip(*per_request)]
        outputs = run_batch(self.model, self._to_torch(merged))
        split = [torch.split(o, sizes) for o in outputs]
        return [self._response([s[i] for s in split]) for i in range(len(sizes))]

    def _answer(self, arrays):
        """The response to one request's inputs: the model's outputs, or its error."""
        try:
            return self._response(run_batch(self.model, self._to_torch(arrays)))
        except Exception as e:
            return self._error(e)

    def execute(self, requests):
        self._idle.busy()
        try:
            return self._execute(requests)
        finally:
            self._idle.done()

    def _execute(self, requests):
        if len(requests) == 1:  # nothing to group or merge
            try:
                arrays = self._inputs_of(requests[0])
            except Exception as e:
                return [self._error(e)]
            return [self._answer(arrays)]
        responses = [None] * len(requests)
        inputs = {}
        for i, request in enumerate(requests):
            try:
                inputs[i] = self._inputs_of(request)
            except Exception as e:  # malformed request: answer it, keep the rest
                responses[i] = self._error(e)
        ready = sorted(inputs)
        for group in group_by_shape([inputs[i] for i in ready]):
            idx = [ready[g] for g in group]
            if self.batching and len(idx) > 1:
                try:
                    for i, response in zip(idx, self._run_merged([inputs[i] for i in idx])):
                        responses[i] = response
                    continue
                except Exception:
                    pass  # one request may poison a merged batch: one by one, only it fails
            # Each request's own inputs, as sent: the merged batch was a copy, and no request
            # runs twice (a model that changes its inputs in place would see them changed).
            for i in idx:
                responses[i] = self._answer(inputs[i])
        return responses

    def _error(self, exc):
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))

    def finalize(self):
        self._idle.stop()
        self.model = None
