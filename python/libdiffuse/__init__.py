"""libdiffuse: a ctypes binding of the libdiffuse C library (diffusion models).

Standard library only; numpy is used when it is installed.

    import libdiffuse as ld

    with ld.Schedule.cosine(1000) as base, base.respace("ddim50") as s:
        def eps_model(x_t, t):          # x_t [batch][dim], t [batch] (original indices)
            return 0.0 * x_t            # any array of batch * output_dim values
        with ld.Model(eps_model, dim=2) as m, ld.Sampler(s, m, "ddim", max_batch=64) as smp:
            x0 = smp.run(seed=1, batch=64)

Loading.  The shared library is looked up, in this order:
  1. the environment variable LIBDIFFUSE_PATH: a file, or a directory holding
     libdiffuse.so.1 (if it is set, nothing else is tried);
  2. the in-tree builds next to this file's folder: ../out/ (make), then
     ../build/ (meson);
  3. libdiffuse.so.1 by its SONAME, through the dynamic loader's search path.
The unversioned libdiffuse.so (the -dev symlink) is never loaded.  The
library's major version must be 1, or the import fails with ImportError.

Functions.  Every exported C function except diffuse_set_allocator has one
entry in _SIGNATURES, applied in a loop.  A function that the loaded library
lacks (an older 1.x) is listed in UNAVAILABLE and available(name) is False;
calling a wrapper that needs it raises NotImplementedError.  The import itself
never fails for that reason.

Errors.  A non-zero status raises DiffuseError(status, name, message) with
.status (the DIFFUSE_E* code), .name (diffuse_strerror) and .message
(diffuse_last_error, read right after the failing call on the same thread).
Argument problems that Python can see before calling (an array whose size is
not batch * dim, a seed outside uint64) raise ValueError or TypeError and call
nothing.

Arrays.  With numpy, float inputs are taken as float32 C-contiguous arrays:
such an array is passed without a copy, anything else goes through
np.ascontiguousarray(x, dtype=np.float32) (float64 for the elementwise
functions, int32 for timesteps).  Results are numpy arrays; a [batch][dim]
result has the shape of the [batch][dim] input it corresponds to.  Without
numpy, inputs are sequences (flat, or nested rows) or array.array of the
matching typecode ('f', 'd', or an int32 'i'), and results are flat
array.array objects in row-major order.

Callbacks.  A Model wraps a Python callable f(x_t, t) -> out.  With numpy, x_t
is a read-only float32 view of shape (batch, dim) and t a read-only int32 view
of shape (batch,), both valid only during the call (copy them to keep them);
without numpy they are a list of rows and a list of ints.  The result must hold
batch * output_dim numbers; it is copied into the library's buffer.  Progress
callbacks are f(step, total): None, False or 0 continue; True or any other
integer stops the run, which then raises DiffuseError with status
DIFFUSE_ECANCELED.  An exception raised inside any callback (BaseException
included) is caught by the trampoline, which returns CALLBACK_EXCEPTION to the
library; when the library call returns, that exception is re-raised instead of
the library's DIFFUSE_EMODEL or DIFFUSE_ECANCELED status.

Ctrl-C during a run (main thread, default SIGINT handler) is delivered at the
next callback, stops the run and is re-raised as KeyboardInterrupt like any
other callback exception, or right after the call if no callback follows.

Nets, training and checkpoints.  Net.mlp(dim, ...) is the library's
reference MLP denoiser and Net.unet(channels, height, width_pixels, ...) its
small convolutional U-Net for images (rows of channels * height *
width_pixels values, [C][H][W]); net.model("ema") (or "weights") is a Model for
Sampler and Vlb that runs it in C, with no Python callback.  Trainer(net,
schedule) trains it: trainer.step(x0, seed) returns the batch's loss.
checkpoint_save(path, net, trainer) and checkpoint_load(path, max_batch,
schedule) -> (net, trainer) save and restore both; training resumes bit for
bit.  Paths are str, bytes or os.PathLike (os.fsencode).  Parameters are flat
float32 arrays (array.array('f') without numpy) in the header's order.  A
Model or Trainer holds its own reference to the C net, so the Net object may
be closed first.  A net's kind and sizes (also those of a loaded net) are
read with diffuse_net_get: net.kind is "mlp" or "unet", and the attributes
that do not describe that kind are None.

numpy.  Set the environment variable LIBDIFFUSE_NO_NUMPY=1 before the import
to take the standard-library paths although numpy is installed.

Threads.  ctypes.CDLL releases the GIL around each call; libdiffuse calls
callbacks only on the thread that called it, so a callback sees ordinary
single-thread Python.  Schedules may be shared between threads; a Model,
Sampler or Vlb is used by one thread at a time (as in C).

Not wrapped: diffuse_set_allocator().  It may only be called before the
library's first allocation in the process (afterwards it fails with "allocator
already in use"), which an importing Python program cannot guarantee, and its
hooks are called from inside library calls, possibly from OpenMP worker threads
without the GIL: they must be C functions, not Python callables.  A program
that needs it calls it from C (or through ctypes on _lib directly) before
anything else touches the library.
"""

import array
import collections
import ctypes
import numbers
import operator
import os
import signal
import struct
import threading
from ctypes import (CFUNCTYPE, POINTER, byref, c_char_p, c_double, c_float, c_int, c_int32,
                    c_size_t, c_uint32, c_uint64, c_void_p)

try:
    if os.environ.get("LIBDIFFUSE_NO_NUMPY"):
        raise ImportError("numpy disabled by LIBDIFFUSE_NO_NUMPY")
    import numpy as _numpy
except ImportError:
    _numpy = None

# The module consults _np at every call, so a test may set it to None to take
# the standard-library paths while numpy is installed.
_np = _numpy

__all__ = [
    "DiffuseError", "Schedule", "Model", "Sampler", "Vlb", "VlbResult",
    "available", "UNAVAILABLE", "DELIBERATELY_UNWRAPPED", "CALLBACK_EXCEPTION",
    "version", "version_string", "has_openmp", "rng_version", "strerror", "last_error",
    "normal_fill", "q_sample", "q_sample_seeded", "q_mean_variance", "q_posterior",
    "predict_convert", "timesteps_from_spec", "timesteps_spacing", "timesteps_rescale",
    "p_mean_variance", "normal_kl", "standard_normal_cdf",
    "discretized_gaussian_log_likelihood", "prior_bpd",
    "Net", "Trainer", "checkpoint_format_version", "checkpoint_save", "checkpoint_load",
    "Scheduler", "SchedulerOutput",
]

# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

_SONAME = "libdiffuse.so.1"
_DEV_NAME = "libdiffuse.so"
_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_IN_TREE_DIRS = ("out", "build")  # make build, then meson build
REQUIRED_MAJOR = 1


def _candidates(env=None):
    """The paths to try, in order, as (path, explicit).  An explicit path
    (LIBDIFFUSE_PATH) is the only candidate when set."""
    if env is None:
        env = os.environ.get("LIBDIFFUSE_PATH", "")
    if env:
        path = os.path.join(env, _SONAME) if os.path.isdir(env) else env
        return [(path, True)]
    paths = [(os.path.join(_TREE, d, _SONAME), False) for d in _IN_TREE_DIRS]
    paths.append((_SONAME, False))  # by SONAME: the loader's search path
    return paths


def _load():
    tried = []
    for path, explicit in _candidates():
        if os.path.basename(path) == _DEV_NAME:
            raise ImportError(
                f"libdiffuse: LIBDIFFUSE_PATH={path!r} names the unversioned development "
                f"symlink; point it at {_SONAME} (or at the directory holding it)")
        if os.sep in path:
            if not os.path.exists(path):
                if explicit:
                    raise ImportError(f"libdiffuse: LIBDIFFUSE_PATH={path!r} does not exist")
                tried.append(f"{path}: not built")
                continue
            path = os.path.abspath(path)
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            if explicit:
                raise ImportError(f"libdiffuse: cannot load LIBDIFFUSE_PATH={path!r}: {e}") from e
            tried.append(f"{path}: {e}")
    raise ImportError("libdiffuse: cannot find the shared library; tried " + "; ".join(tried)
                      + f".  Build it (make lib) or set LIBDIFFUSE_PATH to {_SONAME}.")


def _check_version(number, path):
    """ImportError unless the version number has major REQUIRED_MAJOR."""
    major = number // 10000
    if major != REQUIRED_MAJOR:
        raise ImportError(
            f"libdiffuse: {path} is version {major}.{number // 100 % 100}.{number % 100} "
            f"(diffuse_version() = {number}); this binding needs major version "
            f"{REQUIRED_MAJOR}")


# ---------------------------------------------------------------------------
# The declaration table
# ---------------------------------------------------------------------------

_PF = POINTER(c_float)
_PD = POINTER(c_double)
_PI32 = POINTER(c_int32)
_PSIZE = POINTER(c_size_t)
_PH = POINTER(c_void_p)  # receives a new handle
_H = c_void_p            # a handle

# Callback types, defined once.
_MODEL_FN = CFUNCTYPE(c_int, c_void_p, _PF, _PI32, c_size_t, c_size_t, _PF)
_MODEL_COND_FN = CFUNCTYPE(c_int, c_void_p, _PF, _PI32, _PI32, c_size_t, c_size_t, _PF)
_MODEL_FLOAT_FN = CFUNCTYPE(c_int, c_void_p, _PF, _PF, c_size_t, c_size_t, _PF)
_MODEL_COND_FLOAT_FN = CFUNCTYPE(c_int, c_void_p, _PF, _PF, _PI32, c_size_t, c_size_t, _PF)
_PROGRESS_FN = CFUNCTYPE(c_int, c_void_p, c_int32, c_int32)

_SIGNATURES = {
    # version
    "diffuse_version": ([], c_int),
    "diffuse_version_string": ([], c_char_p),
    "diffuse_has_openmp": ([], c_int),
    # status
    "diffuse_strerror": ([c_int], c_char_p),
    "diffuse_last_error": ([], c_char_p),
    # schedules
    "diffuse_schedule_create_linear": ([_PH, c_size_t, c_double, c_double], c_int),
    "diffuse_schedule_create_cosine": ([_PH, c_size_t, c_double, c_double], c_int),
    "diffuse_schedule_create_scaled_linear": ([_PH, c_size_t, c_double, c_double], c_int),
    "diffuse_schedule_create_sigmoid": (
        [_PH, c_size_t, c_double, c_double, c_double, c_double], c_int),
    "diffuse_schedule_create_betas": ([_PH, _PD, c_size_t], c_int),
    "diffuse_schedule_rescale_zero_snr": ([_PH, _H], c_int),
    "diffuse_schedule_respace": ([_PH, _H, _PI32, c_size_t], c_int),
    "diffuse_schedule_free": ([_H], None),
    "diffuse_schedule_length": ([_H], c_size_t),
    "diffuse_schedule_base_length": ([_H], c_size_t),
    "diffuse_schedule_timesteps": ([_H, _PI32, c_size_t], c_int),
    "diffuse_schedule_table": ([_H, c_int, _PD, c_size_t], c_int),
    # timestep lists
    "diffuse_timesteps_from_spec": ([c_size_t, c_char_p, _PI32, c_size_t, _PSIZE], c_int),
    "diffuse_timesteps_spacing": ([c_size_t, c_size_t, c_int, c_int32, _PI32, c_size_t], c_int),
    "diffuse_timesteps_rescale": ([_PI32, c_size_t, c_size_t, _PF], c_int),
    # forward process and posterior
    "diffuse_q_sample": ([_H, _PF, _PI32, _PF, c_size_t, c_size_t, _PF], c_int),
    "diffuse_q_sample_seeded": (
        [_H, _PF, _PI32, c_uint64, c_uint64, c_uint32, c_size_t, c_size_t, _PF, _PF], c_int),
    "diffuse_q_mean_variance": ([_H, _PF, _PI32, c_size_t, c_size_t, _PF, _PD, _PD], c_int),
    "diffuse_q_posterior": ([_H, _PF, _PF, _PI32, c_size_t, c_size_t, _PF, _PD, _PD], c_int),
    "diffuse_predict_convert": (
        [_H, c_int, c_int, _PF, _PI32, _PF, c_size_t, c_size_t, _PF], c_int),
    # elementwise VLB terms
    "diffuse_normal_kl": ([_PD, _PD, _PD, _PD, c_size_t, _PD], c_int),
    "diffuse_standard_normal_cdf": ([_PD, c_size_t, c_int, _PD], c_int),
    "diffuse_discretized_gaussian_log_likelihood": (
        [_PD, _PD, _PD, c_size_t, c_int, _PD], c_int),
    # model
    "diffuse_model_create": ([_PH, _MODEL_FN, c_void_p, c_size_t, c_int, c_int], c_int),
    "diffuse_model_create_cond": ([_PH, _MODEL_COND_FN, c_void_p, c_size_t, c_int, c_int,
                                   c_size_t], c_int),
    "diffuse_model_create_float": ([_PH, _MODEL_FLOAT_FN, c_void_p, c_size_t, c_int, c_int],
                                   c_int),
    "diffuse_model_create_cond_float": ([_PH, _MODEL_COND_FLOAT_FN, c_void_p, c_size_t, c_int,
                                         c_int, c_size_t], c_int),
    "diffuse_model_create_external": ([_PH, c_size_t, c_int, c_int], c_int),
    "diffuse_model_free": ([_H], None),
    "diffuse_model_output_dim": ([_H], c_size_t),
    "diffuse_model_set": ([_H, c_int, c_double], c_int),
    "diffuse_model_get": ([_H, c_int, _PD], c_int),
    "diffuse_p_mean_variance": ([_H, _H, _PF, _PI32, _PF, c_size_t, _PF, _PF, _PF], c_int),
    # sampler
    "diffuse_sampler_create": ([_PH, _H, _H, c_int, c_size_t], c_int),
    "diffuse_sampler_free": ([_H], None),
    "diffuse_sampler_set": ([_H, c_int, c_double], c_int),
    "diffuse_sampler_get": ([_H, c_int, _PD], c_int),
    "diffuse_sampler_set_progress": ([_H, _PROGRESS_FN, c_void_p], c_int),
    "diffuse_sampler_memory": ([_H], c_size_t),
    "diffuse_sampler_run": ([_H, _PF, c_uint64, c_uint64, c_size_t, _PF], c_int),
    "diffuse_sampler_run_cond": ([_H, _PF, _PI32, c_uint64, c_uint64, c_size_t, _PF], c_int),
    "diffuse_sampler_step": ([_H, _PF, c_int32, c_uint64, c_uint64, c_size_t, _PF], c_int),
    "diffuse_sampler_step_cond": ([_H, _PF, _PI32, c_int32, c_uint64, c_uint64, c_size_t, _PF],
                                  c_int),
    "diffuse_sampler_invert": ([_H, _PF, c_size_t, _PF], c_int),
    "diffuse_sampler_timesteps": ([_H, _PF, c_size_t], c_int),
    "diffuse_sampler_reset": ([_H], c_int),
    "diffuse_sampler_step_output": ([_H, c_size_t, _PF, _PF, _PF, _PF, c_uint64, c_uint64,
                                     c_size_t, _PF, _PF], c_int),
    # variational bound
    "diffuse_vlb_create": ([_PH, _H, _H, c_size_t], c_int),
    "diffuse_vlb_free": ([_H], None),
    "diffuse_vlb_set": ([_H, c_int, c_double], c_int),
    "diffuse_vlb_get": ([_H, c_int, _PD], c_int),
    "diffuse_vlb_set_progress": ([_H, _PROGRESS_FN, c_void_p], c_int),
    "diffuse_vlb_run": ([_H, _PF, c_uint64, c_uint64, c_size_t, _PD, _PD, _PD, _PD, _PD], c_int),
    "diffuse_vlb_run_cond": ([_H, _PF, _PI32, c_uint64, c_uint64, c_size_t, _PD, _PD, _PD, _PD,
                              _PD], c_int),
    "diffuse_prior_bpd": ([_H, _PF, c_size_t, c_size_t, _PD], c_int),
    # reference denoisers, training and checkpoints
    "diffuse_net_create_mlp": (
        [_PH, c_size_t, c_size_t, c_size_t, c_size_t, c_int, c_int, c_size_t, c_uint64], c_int),
    "diffuse_net_create_unet": (
        [_PH, c_size_t, c_size_t, c_size_t, c_size_t, c_size_t, c_int, c_int, c_size_t,
         c_uint64], c_int),
    "diffuse_net_create_iddpm": (
        [_PH, c_size_t, c_size_t, c_size_t, c_size_t, c_char_p, c_int, c_int, c_size_t,
         c_uint64], c_int),
    "diffuse_net_free": ([_H], None),
    "diffuse_net_param_count": ([_H], c_size_t),
    "diffuse_net_set": ([_H, c_int, c_double], c_int),
    "diffuse_net_get": ([_H, c_int, POINTER(c_double)], c_int),
    "diffuse_net_get_params": ([_H, c_int, _PF, c_size_t], c_int),
    "diffuse_net_set_params": ([_H, c_int, _PF, c_size_t], c_int),
    "diffuse_net_forward": ([_H, c_int, _PF, _PI32, c_size_t, _PF], c_int),
    "diffuse_net_forward_cond": ([_H, c_int, _PF, _PI32, _PI32, c_size_t, _PF], c_int),
    "diffuse_net_forward_float": ([_H, c_int, _PF, _PF, _PI32, c_size_t, _PF], c_int),
    "diffuse_net_model": ([_H, c_int, _PH], c_int),
    "diffuse_trainer_create": ([_PH, _H, _H, c_size_t], c_int),
    "diffuse_trainer_free": ([_H], None),
    "diffuse_trainer_set": ([_H, c_int, c_double], c_int),
    "diffuse_trainer_get": ([_H, c_int, _PD], c_int),
    "diffuse_trainer_step": ([_H, _PF, c_size_t, c_uint64, _PD], c_int),
    "diffuse_trainer_step_cond": ([_H, _PF, _PI32, c_size_t, c_uint64, _PD], c_int),
    # the split step (1.1): bound for callers that all-reduce gradients themselves
    "diffuse_trainer_compute_grads": (
        [_H, _PF, _PI32, c_size_t, c_uint64, c_uint64, c_size_t, _PD], c_int),
    "diffuse_trainer_grads": ([_H, POINTER(_PF), POINTER(c_size_t)], c_int),
    "diffuse_trainer_records": ([_H, _PD, c_size_t], c_int),
    "diffuse_trainer_apply": ([_H, _PD, c_size_t, _PD], c_int),
    "diffuse_checkpoint_format_version": ([], c_int),
    "diffuse_checkpoint_save": ([c_char_p, _H, _H], c_int),
    "diffuse_checkpoint_load": ([c_char_p, c_size_t, _PH, _H, c_size_t, _PH], c_int),
    "diffuse_checkpoint_load_limit": ([c_char_p, c_size_t, _PH, _H, c_size_t, _PH, c_uint64],
                                      c_int),
    # since 1.1
    "diffuse_checkpoint_save_meta": ([c_char_p, _H, _H, c_char_p], c_int),
    "diffuse_checkpoint_read_meta": ([c_char_p, c_char_p, c_size_t, POINTER(c_size_t)], c_int),
    # randomness
    "diffuse_rng_version": ([], c_int),
    "diffuse_normal_fill": ([c_uint64, c_uint64, c_uint32, _PF, c_size_t], c_int),
}

# Exported by the library but deliberately not in _SIGNATURES.
#
# diffuse_set_allocator(alloc, release, user) is refused with "allocator
# already in use" once the library has allocated anything in the process, and
# an importing Python program cannot know that nothing (another module, an
# earlier import) has done so; it is a process-wide setting, not something a
# module should change.  Its hooks are called from inside library calls,
# possibly from OpenMP worker threads that do not hold the GIL, and while a
# sampler's workspace is being freed: they must be C functions, never Python
# callables through CFUNCTYPE (which would need the GIL and must outlive every
# allocation).  A program that needs it calls it from C, or through
# _lib.diffuse_set_allocator with C function pointers, before anything else
# touches the library.
DELIBERATELY_UNWRAPPED = ("diffuse_set_allocator",)


def _bind(lib, table):
    """Apply a declaration table to a loaded library.  Returns ({name: function},
    [names the library lacks]); a missing function is not an error."""
    funcs, missing = {}, []
    for name, (argtypes, restype) in table.items():
        if not hasattr(lib, name):
            missing.append(name)
            continue
        f = getattr(lib, name)
        f.argtypes = argtypes
        f.restype = restype
        funcs[name] = f
    return funcs, missing


_lib, _path = _load()
_funcs, _missing = _bind(_lib, _SIGNATURES)
for _name in ("diffuse_version", "diffuse_strerror", "diffuse_last_error"):
    if _name not in _funcs:
        raise ImportError(f"libdiffuse: {_path} does not export {_name}; not a libdiffuse 1.x")
_check_version(_funcs["diffuse_version"](), _path)

UNAVAILABLE = tuple(_missing)
del _name


def available(name):
    """Whether the loaded library has the C function `name` (for example
    "diffuse_sampler_invert"), so that the wrappers needing it work."""
    if not name.startswith("diffuse_"):
        name = "diffuse_" + name
    return name in _funcs


def _f(name):
    try:
        return _funcs[name]
    except KeyError:
        raise NotImplementedError(
            f"{name} is not available in the loaded libdiffuse {version_string()} "
            f"({_path})") from None


# ---------------------------------------------------------------------------
# Errors and information
# ---------------------------------------------------------------------------

class DiffuseError(Exception):
    """A libdiffuse call returned a non-zero status.

    .status:  the DIFFUSE_E* code (negative int);
    .name:    diffuse_strerror(status), e.g. "invalid argument";
    .message: diffuse_last_error() read right after the call, e.g.
              "diffuse_q_sample: timestep t[0] = 1000 out of range [0, 999]".
    """

    def __init__(self, status, name, message):
        super().__init__(status, name, message)
        self.status = status
        self.name = name
        self.message = message

    def __str__(self):
        return f"{self.message or self.name} [{self.name}, status {self.status}]"


def _decode(b):
    return b.decode("utf-8", "replace") if b is not None else ""


def strerror(status):
    """The static name of a status code ("unknown status" if not one)."""
    return _decode(_f("diffuse_strerror")(_int(status, 32, "status")))


def last_error():
    """The detail message of the last failure on the calling thread ("" before any)."""
    return _decode(_f("diffuse_last_error")())


def _check(status):
    if status != 0:
        message = _decode(_funcs["diffuse_last_error"]())  # at once, before anything else
        raise DiffuseError(status, _decode(_funcs["diffuse_strerror"](status)), message)


def version():
    """diffuse_version(): MAJOR * 10000 + MINOR * 100 + PATCH of the loaded library."""
    return int(_f("diffuse_version")())


def version_string():
    """diffuse_version_string(): "MAJOR.MINOR.PATCH"."""
    return _decode(_f("diffuse_version_string")())


def has_openmp():
    """Whether the loaded library was built with OpenMP."""
    return bool(_f("diffuse_has_openmp")())


def rng_version():
    """The version of the library's noise stream (DIFFUSE_RNG_VERSION)."""
    return int(_f("diffuse_rng_version")())


# ---------------------------------------------------------------------------
# Constants.  Values the C side offers as functions come from the functions;
# the others are the header's #defines (frozen: "values never reused").
# ---------------------------------------------------------------------------

VERSION_NUMBER = version()
VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH = (
    VERSION_NUMBER // 10000, VERSION_NUMBER // 100 % 100, VERSION_NUMBER % 100)
VERSION_STRING = version_string()
RNG_VERSION = rng_version()

# Status codes (DIFFUSE_STATUS_MAP).
DIFFUSE_OK = 0
DIFFUSE_EINVAL = -1
DIFFUSE_ENOMEM = -2
DIFFUSE_EIO = -3
DIFFUSE_EFORMAT = -4
DIFFUSE_ENUMERIC = -5
DIFFUSE_ECANCELED = -6
DIFFUSE_EMODEL = -7

MAX_STEPS = 16777216
CHECKPOINT_META_MAX = 65536

TABLE_BETAS = 0
TABLE_ALPHAS = 1
TABLE_ALPHAS_CUMPROD = 2
TABLE_ALPHAS_CUMPROD_PREV = 3
TABLE_ALPHAS_CUMPROD_NEXT = 4
TABLE_ONE_MINUS_ALPHAS_CUMPROD = 5
TABLE_SQRT_ALPHAS_CUMPROD = 6
TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD = 7
TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD = 8
TABLE_SQRT_RECIP_ALPHAS_CUMPROD = 9
TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD = 10
TABLE_POSTERIOR_VARIANCE = 11
TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED = 12
TABLE_POSTERIOR_MEAN_COEF1 = 13
TABLE_POSTERIOR_MEAN_COEF2 = 14
TABLE_COUNT_V1 = 15

SPACING_LEADING = 0
SPACING_TRAILING = 1
SPACING_LINSPACE = 2

PRED_EPS = 0
PRED_X0 = 1
PRED_V = 2

CDF_TANH = 0
CDF_EXACT = 1

VAR_FIXED_SMALL = 0
VAR_FIXED_LARGE = 1
VAR_LEARNED = 2
VAR_LEARNED_RANGE = 3

MODEL_CLIP_X0 = 1
MODEL_CLIP_MIN = 2
MODEL_CLIP_MAX = 3
MODEL_THRESHOLD_PERCENTILE = 4
MODEL_THRESHOLD_MAX = 5
MODEL_CLASSES = 6
MODEL_UNCONDITIONAL = 7
MODEL_RESCALE_TIMESTEPS = 8
MODEL_FLOAT_TIMESTEPS = 9

LABEL_NONE = -1
MAX_CLASSES = 16777216
CHECKPOINT_DEFAULT_MAX_WORKSPACE = 1073741824  # checkpoint_load()'s limit, bytes

SAMPLER_DDPM = 0
SAMPLER_DDIM = 1
SAMPLER_DPMPP_2M = 2
SAMPLER_EULER = 3
SAMPLER_EULER_ANCESTRAL = 4
SAMPLER_HEUN = 5
SAMPLER_DPMPP_2M_SDE = 6
SAMPLER_UNIPC = 7
SIGMAS_SCHEDULE = 0
SIGMAS_KARRAS = 1
SIGMAS_EXPONENTIAL = 2
SAMPLER_ETA = 1
SAMPLER_NUM_THREADS = 2
SAMPLER_LAMBDA_MIN = 3
SAMPLER_GUIDANCE = 4
SAMPLER_GUIDANCE_RESCALE = 5
SAMPLER_SET_ALPHA_TO_ONE = 6
SAMPLER_CLIPPED_MODEL_OUTPUT = 7
SAMPLER_ORDER = 8
SAMPLER_LOWER_ORDER_FINAL = 9
SAMPLER_NUM_STEPS = 10
SAMPLER_POSITION = 11
SAMPLER_SIGMA_GRID = 12
SAMPLER_GRID_STEPS = 13
SAMPLER_SIGMA_MIN = 14
SAMPLER_SIGMA_MAX = 15
SAMPLER_THIRD_ORDER_TAYLOR = 16

RNG_STEP_INITIAL = 0xFFFFFFFF

VLB_CDF = 1
VLB_NUM_THREADS = 2

NET_WEIGHTS = 0
NET_EMA = 1
NET_NUM_THREADS = 1
NET_DIM = 2
NET_OUTPUT_DIM = 3
NET_WIDTH = 4
NET_DEPTH = 5
NET_EMB_DIM = 6
NET_PREDICTION = 7
NET_VARIANCE = 8
NET_MAX_BATCH = 9
NET_KIND = 10
NET_CHANNELS = 11
NET_HEIGHT = 12
NET_WIDTH_PIXELS = 13
NET_BASE_CHANNELS = 14
NET_GROUPS = 15
NET_CLASSES = 16
NET_UNCOND_ROWS = 17

NET_KIND_MLP = 1
NET_KIND_UNET = 2
NET_KIND_IDDPM = 3
NET_NUM_RES_BLOCKS = 18
NET_LEVELS = 19
NET_NUM_HEADS = 20
NET_NUM_HEADS_UPSAMPLE = 21
NET_SCALE_SHIFT = 22
NET_DROPOUT = 23
NET_CONV_RESAMPLE = 24
NET_TIME_SCALE = 25

LOSS_MSE = 0
LOSS_HYBRID = 1
LOSS_KL = 2

TIMESTEPS_UNIFORM = 0
TIMESTEPS_LOSS_SECOND_MOMENT = 1

TRAINER_LR = 1
TRAINER_BETA1 = 2
TRAINER_BETA2 = 3
TRAINER_EPS = 4
TRAINER_WEIGHT_DECAY = 5
TRAINER_ADAMW = 6
TRAINER_GRAD_CLIP = 7
TRAINER_EMA_DECAY = 8
TRAINER_LOSS = 9
TRAINER_MIN_SNR_GAMMA = 10
TRAINER_TIMESTEPS = 11
TRAINER_NUM_THREADS = 12
TRAINER_STEP = 13
TRAINER_LABEL_DROPOUT = 14
TRAINER_RECORD_WIDTH = 4  # doubles per row record of Trainer.records()

# What a trampoline returns to the library when the Python callable raised.
# Any non-zero value stops the run; this one shows up in the C message
# ("model callback returned 28793 ...").  The exception itself is re-raised.
CALLBACK_EXCEPTION = 0x7079

# Names accepted wherever a constant is expected (case-insensitive).
_TABLE_NAMES = {
    "betas": 0, "alphas": 1, "alphas_cumprod": 2, "alphas_cumprod_prev": 3,
    "alphas_cumprod_next": 4, "one_minus_alphas_cumprod": 5, "sqrt_alphas_cumprod": 6,
    "sqrt_one_minus_alphas_cumprod": 7, "log_one_minus_alphas_cumprod": 8,
    "sqrt_recip_alphas_cumprod": 9, "sqrt_recipm1_alphas_cumprod": 10,
    "posterior_variance": 11, "posterior_log_variance_clipped": 12,
    "posterior_mean_coef1": 13, "posterior_mean_coef2": 14,
}
_SPACING_NAMES = {"leading": 0, "trailing": 1, "linspace": 2}
_PRED_NAMES = {"eps": 0, "epsilon": 0, "x0": 1, "sample": 1, "v": 2, "v_prediction": 2}
_VAR_NAMES = {"fixed_small": 0, "fixed_large": 1, "learned": 2, "learned_range": 3}
_CDF_NAMES = {"tanh": 0, "exact": 1}
_SAMPLER_KINDS = {"ddpm": 0, "ddim": 1, "dpmpp_2m": 2, "euler": 3, "euler_ancestral": 4,
                  "heun": 5, "dpmpp_2m_sde": 6, "unipc": 7}
_MODEL_PARAMS = {"clip_x0": 1, "clip_min": 2, "clip_max": 3, "threshold_percentile": 4,
                 "threshold_max": 5, "classes": 6, "unconditional": 7,
                 "rescale_timesteps": 8, "float_timesteps": 9}
_SAMPLER_PARAMS = {"eta": 1, "num_threads": 2, "lambda_min": 3, "guidance": 4,
                   "guidance_rescale": 5, "set_alpha_to_one": 6, "clipped_model_output": 7,
                   "order": 8, "lower_order_final": 9, "num_steps": 10, "position": 11,
                   "sigma_grid": 12, "grid_steps": 13, "sigma_min": 14, "sigma_max": 15,
                   "third_order_taylor": 16}
_VLB_PARAMS = {"cdf": 1, "num_threads": 2}
_WHICH_NAMES = {"weights": 0, "ema": 1}
_NET_PARAMS = {"num_threads": 1, "classes": 16, "dropout": 23, "time_scale": 25}
# Read-only net parameters: those of every net, then those of one kind.
_NET_ARCH = {"dim": 2, "output_dim": 3, "emb_dim": 6, "prediction": 7, "variance": 8,
             "max_batch": 9}
_NET_KIND_ARCH = {
    1: {"width": 4, "depth": 5},
    2: {"channels": 11, "height": 12, "width_pixels": 13, "base_channels": 14, "groups": 15},
    3: {"channels": 11, "height": 12, "width_pixels": 13, "model_channels": 14, "groups": 15,
        "num_res_blocks": 18, "levels": 19, "num_heads": 20, "num_heads_upsample": 21,
        "use_scale_shift_norm": 22, "conv_resample": 24},
}
_NET_KIND_NAMES = {1: "mlp", 2: "unet", 3: "iddpm"}
_LOSS_NAMES = {"mse": 0, "hybrid": 1, "kl": 2}
_TIMESTEP_SAMPLER_NAMES = {"uniform": 0, "loss_second_moment": 1}
_TRAINER_PARAMS = {
    "lr": 1, "beta1": 2, "beta2": 3, "eps": 4, "weight_decay": 5, "adamw": 6, "grad_clip": 7,
    "ema_decay": 8, "loss": 9, "min_snr_gamma": 10, "timesteps": 11, "num_threads": 12,
    "step": 13, "label_dropout": 14,
}


# ---------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------

def _code(value, names, what):
    """A constant given as an int (passed on: the library validates it) or a name."""
    if isinstance(value, str):
        try:
            return names[value.lower()]
        except KeyError:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(names)}") from None
    return _int(value, 32, what)


def _int(value, bits, what):
    v = operator.index(value)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    if not lo <= v < hi:
        raise ValueError(f"{what} = {v} does not fit a {bits}-bit signed integer")
    return v


def _uint(value, bits, what):
    v = operator.index(value)
    if not 0 <= v < (1 << bits):
        raise ValueError(f"{what} = {v} is outside [0, 2^{bits})")
    return v


def _size(value, what):
    return _uint(value, 8 * ctypes.sizeof(c_size_t), what)


_I32_CODE = "i" if array.array("i").itemsize == 4 else "l"
_KINDS = {  # kind: (ctypes type, pointer type, array typecode, numpy dtype name)
    "f": (c_float, _PF, "f", "float32"),
    "d": (c_double, _PD, "d", "float64"),
    "i": (c_int32, _PI32, _I32_CODE, "int32"),
}


class _Arr:
    """An array ready for a C call: .ptr (typed pointer), .n (elements),
    .shape, and .keep (the object that owns the memory; it stays referenced
    until this _Arr is dropped, i.e. after the call returns)."""
    __slots__ = ("keep", "buf", "ptr", "n", "shape")

    def __init__(self, keep, buf, ptr, n, shape):
        self.keep, self.buf, self.ptr, self.n, self.shape = keep, buf, ptr, n, shape

    def rows(self):
        """Leading dimension of a [batch][dim] input: shape[0] if 2-D or more, else 1."""
        return self.shape[0] if len(self.shape) >= 2 else 1


def _flatten(x, convert):
    """Flatten nested sequences; returns (list, shape).  Raises ValueError on
    ragged input."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"expected numbers, got {type(x).__name__}")
    try:
        items = list(x)
    except TypeError:
        return [convert(x)], ()
    if items and not isinstance(items[0], (str, bytes)) and hasattr(items[0], "__len__"):
        flat, shape0 = [], None
        for row in items:
            vals, shape = _flatten(row, convert)
            if shape0 is None:
                shape0 = shape
            elif shape != shape0:
                raise ValueError(f"ragged nested sequence: rows of shape {shape0} and {shape}")
            flat.extend(vals)
        return flat, (len(items),) + shape0
    return [convert(v) for v in items], (len(items),)


def _as_int(v):
    if isinstance(v, float):
        raise TypeError(f"expected an integer, got float {v!r}")
    return operator.index(v)


def _from_buffer(obj, ctype, n):
    """A ctypes array over the buffer of an array.array (no copy).  It locks
    the array against resizing while referenced; ctypes accepts it wherever
    a POINTER(ctype) is declared, so no cast (whose result would form a
    reference cycle and keep the lock until a garbage collection) is made."""
    if n == 0:
        return None, None
    buf = (ctype * n).from_buffer(obj)
    return buf, buf


def _address(a, ptype):
    """A typed pointer to a numpy array's data.  ctypes.cast from an integer
    address keeps no reference (the caller's _Arr keeps the array)."""
    return ctypes.cast(a.ctypes.data, ptype)


def _arr(x, kind, what):
    """Convert an input array (see the module docstring) for a C call."""
    if x is None:
        raise TypeError(f"{what} must be an array, not None")
    ctype, ptype, code, dtype = _KINDS[kind]
    np = _np
    if np is not None:
        if kind == "i":
            a = np.asarray(x)
            if a.dtype != np.int32:
                if a.size and a.dtype.kind not in "iu":
                    raise TypeError(f"{what} must hold integers, not {a.dtype}")
                if a.size and (int(a.min()) < -(1 << 31) or int(a.max()) >= (1 << 31)):
                    raise ValueError(f"{what} holds values outside int32")
                a = a.astype(np.int32)
            a = np.ascontiguousarray(a)
        else:
            a = np.ascontiguousarray(x, dtype=dtype)  # no copy for a matching array
        if not a.flags.aligned:
            a = a.copy()
        return _Arr(a, None, _address(a, ptype), int(a.size), tuple(a.shape))
    if isinstance(x, array.array) and x.typecode == code:
        buf, ptr = _from_buffer(x, ctype, len(x))
        return _Arr(x, buf, ptr, len(x), (len(x),))
    vals, shape = _flatten(x, _as_int if kind == "i" else float)
    if kind == "i":
        for v in vals:
            if not -(1 << 31) <= v < (1 << 31):
                raise ValueError(f"{what} holds {v}, outside int32")
    arr = array.array(code, vals)
    buf, ptr = _from_buffer(arr, ctype, len(arr))
    return _Arr(arr, buf, ptr, len(arr), shape or (1,))


def _float_times(t):
    """Whether timesteps t are given as floats (a float, a float array, or a
    sequence holding a float) rather than integers."""
    if isinstance(t, numbers.Integral):
        return False
    if isinstance(t, numbers.Real):
        return True
    if _np is not None and isinstance(t, _np.ndarray):
        return t.dtype.kind == "f"
    if isinstance(t, array.array):
        return t.typecode in "fd"
    try:
        return any(isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)
                   for v in t)
    except TypeError:
        return False


def _empty(kind, shape):
    """A new output array of the given shape (flat array.array without numpy)."""
    ctype, ptype, code, dtype = _KINDS[kind]
    n = 1
    for d in shape:
        n *= d
    np = _np
    if np is not None:
        a = np.empty(shape, dtype=dtype)
        return _Arr(a, None, _address(a, ptype) if n else None, n, tuple(shape))
    arr = array.array(code, bytes(ctypes.sizeof(ctype) * n))
    buf, ptr = _from_buffer(arr, ctype, n)
    return _Arr(arr, buf, ptr, n, tuple(shape))


def _result(a):
    """The user-facing object of an output _Arr (drops the ctypes export)."""
    a.buf = a.ptr = None
    return a.keep


def _batch_t(t, x, what="t"):
    """Timesteps as an int32 _Arr of length batch.  A single integer is used
    for every row of x."""
    if isinstance(t, numbers.Integral):
        return _arr([int(t)] * x.rows(), "i", what)
    ta = _arr(t, "i", what)
    if len(ta.shape) > 1:
        raise ValueError(f"{what} must be 1-D, got shape {ta.shape}")
    return ta


def _dim(n, batch, what):
    """dim = n / batch, checked.  With batch 0 the library reports the error."""
    if batch == 0:
        if n:
            raise ValueError(f"{what} has {n} elements but the batch is empty")
        return 0
    if n % batch:
        raise ValueError(f"{what} has {n} elements, not a multiple of batch = {batch}")
    return n // batch


def _rows_of(n, dim, what):
    """The number of rows of dim elements in an array of n elements, checked."""
    if dim == 0 or n % dim:
        raise ValueError(f"{what} has {n} elements, not a whole number of rows of "
                         f"dim = {dim}")
    return n // dim


def _rows(xa, dim, what):
    """The rows of a [batch][dim] input _Arr, checked: an array of two or more
    dimensions must have rows of dim values (shape (batch, dim), or (batch,
    C, H, W) with C H W = dim for images); a flat one a multiple of dim."""
    if len(xa.shape) >= 2:
        row = 1
        for d in xa.shape[1:]:
            row *= d
        if row != dim:
            raise ValueError(f"{what} has shape {tuple(xa.shape)}: rows of {row} values, but "
                             f"the model's dim is {dim} (expected shape (batch, {dim}))")
        return xa.shape[0]
    return _rows_of(xa.n, dim, what)


def _same_size(a, n, what):
    if a.n != n:
        raise ValueError(f"{what} has {a.n} elements, expected {n} (batch * dim)")


def _data_shape(x, batch, dim):
    """Shape of a [batch][dim] result: that of the input array x when it has
    batch * dim elements (numpy), else (batch, dim)."""
    if _np is not None and x is not None and x.n == batch * dim and x.shape:
        return x.shape
    return (batch, dim) if _np is not None else (batch * dim,)


def _labels(labels, batch):
    """labels as an int32 array of batch entries."""
    la = _arr(labels, "i", "labels")
    if la.n != batch:
        raise ValueError(f"labels holds {la.n} values, not batch = {batch}")
    return la


def _new_handle(fname, *args):
    out = c_void_p()
    _check(_hcall(_f(fname), byref(out), *args))
    return out.value


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------

class _Trampoline:
    """Owns a CFUNCTYPE instance and the exception its Python callable raised,
    per thread (a model may drive samplers on several threads)."""

    def __init__(self):
        self.cfunc = None
        self._exc = {}

    def clear(self):
        self._exc.pop(threading.get_ident(), None)

    def store(self, exc):
        self._exc[threading.get_ident()] = exc

    def take(self):
        return self._exc.pop(threading.get_ident(), None)


# Ctrl-C during a library call.  CPython runs signal handlers at the first
# bytecode of the next Python frame, which for a callback is the trampoline's
# entry, before its try block: ctypes would then print the KeyboardInterrupt as
# "Exception ignored on calling ctypes callback function", hand the library an
# undefined return value and lose the interrupt.  So while a library call that
# may call back runs on the main thread, and SIGINT has Python's default
# handler, a handler that only records the signal is installed; the
# trampolines raise the KeyboardInterrupt inside their try block (so it is
# stored and re-raised like any callback exception), and one that arrived
# after the last callback is raised when the call returns.  A SIGINT handler
# installed by the program is left alone.
_sigint_pending = False


def _record_sigint(signum, frame):
    global _sigint_pending
    _sigint_pending = True


def _raise_deferred_interrupt():
    global _sigint_pending
    if _sigint_pending:
        _sigint_pending = False
        raise KeyboardInterrupt


class _DeferSigint:
    def __enter__(self):
        self.active = False
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    signal.signal(signal.SIGINT, _record_sigint)
                    self.active = True
            except (ValueError, OSError):  # not the main interpreter
                pass
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _raise_deferred_interrupt()
        return False


def _check_output_shape(shape, batch, out_dim):
    """A model's result must be (batch, output_dim), or (batch, C, H, W) with
    C H W = output_dim, or (batch,) when output_dim is 1 (without numpy, also
    a flat row-major sequence, the form of this path's own results): anything
    else (a transposed array of the right size included) is an error naming
    both shapes."""
    if len(shape) >= 2 and shape[0] == batch:
        row = 1
        for d in shape[1:]:
            row *= d
        if row == out_dim:
            return
    elif len(shape) == 1 and out_dim == 1 and shape[0] == batch:
        return
    raise ValueError(f"the model returned an array of shape {tuple(shape)}; expected "
                     f"({batch}, {out_dim}) (batch, output_dim)")


def _model_call(fn, out_factor, x_ptr, t_ptr, batch, dim, out_ptr, l_ptr=None):
    """One model call: views (numpy) or lists of the inputs, fn, and its
    result copied into out.  With l_ptr (a conditional model) fn also gets
    the labels."""
    out_dim = dim * out_factor
    np = _np
    if np is not None:
        x = np.ctypeslib.as_array(x_ptr, shape=(batch, dim))
        x.flags.writeable = False
        t = np.ctypeslib.as_array(t_ptr, shape=(batch,))
        t.flags.writeable = False
        if l_ptr is None:
            r = fn(x, t)
        else:
            labels = np.ctypeslib.as_array(l_ptr, shape=(batch,))
            labels.flags.writeable = False
            r = fn(x, t, labels)
        if r is None:
            raise TypeError(f"the model returned None; expected an array of shape "
                            f"({batch}, {out_dim}) (batch, output_dim)")
        r = np.asarray(r, dtype=np.float32)
        _check_output_shape(tuple(r.shape), batch, out_dim)
        o = np.ctypeslib.as_array(out_ptr, shape=(batch, out_dim))
        o[...] = r.reshape(batch, out_dim)
    else:
        flat = x_ptr[:batch * dim]
        x = [flat[b * dim:(b + 1) * dim] for b in range(batch)]
        r = fn(x, t_ptr[:batch]) if l_ptr is None else fn(x, t_ptr[:batch], l_ptr[:batch])
        if r is None:
            raise TypeError(f"the model returned None; expected {batch} rows of {out_dim} "
                            "values (batch, output_dim)")
        vals, shape = _flatten(r, float)
        if len(shape) != 1 or shape[0] != batch * out_dim:  # flat row-major is this path's form
            _check_output_shape(shape, batch, out_dim)
        if len(vals) != batch * out_dim:
            raise ValueError(f"the model returned {len(vals)} values; expected "
                             f"batch * output_dim = {batch} * {out_dim}")
        r = array.array("f", vals)
        ctypes.memmove(out_ptr, r.buffer_info()[0], len(r) * r.itemsize)


def _forget_views(tb):
    """Clear the locals of _model_call's finished frame in a traceback, so that
    a stored exception keeps no numpy view of library memory (the user's own
    frames are left as they are)."""
    while tb is not None:
        if tb.tb_frame.f_code is _model_call.__code__:
            tb.tb_frame.clear()
        tb = tb.tb_next


def _model_trampoline(fn, out_factor, cond=False, float_t=False):
    """The C callback for a Python model: diffuse_model_fn, or with cond the
    labelled diffuse_model_cond_fn (one more pointer, the labels); with
    float_t their float-timestep twins."""
    box = _Trampoline()

    def model_tramp(user, x_ptr, t_ptr, *rest):
        l_ptr, (batch, dim, out_ptr) = (rest[0], rest[1:]) if cond else (None, rest)
        try:
            _raise_deferred_interrupt()
            _model_call(fn, out_factor, x_ptr, t_ptr, batch, dim, out_ptr, l_ptr)
            _raise_deferred_interrupt()
            return 0
        except BaseException as e:  # noqa: B036 -- stored and re-raised after the C call
            _forget_views(e.__traceback__)
            box.store(e)
            return CALLBACK_EXCEPTION

    if float_t:
        box.cfunc = (_MODEL_COND_FLOAT_FN if cond else _MODEL_FLOAT_FN)(model_tramp)
    else:
        box.cfunc = (_MODEL_COND_FN if cond else _MODEL_FN)(model_tramp)
    return box


def _progress_trampoline(fn):
    box = _Trampoline()

    def progress_tramp(user, step, total):
        try:
            _raise_deferred_interrupt()
            r = fn(step, total)
            _raise_deferred_interrupt()
            if r is None:
                return 0
            if isinstance(r, numbers.Integral):  # bool included: True stops
                r = int(r)
            elif _np is not None and isinstance(r, _np.bool_):
                r = int(bool(r))
            else:
                raise TypeError(f"a progress callback returns None, a bool or an int, "
                                f"not {type(r).__name__}")
            if r == 0:
                return 0
            return r if -(1 << 31) <= r < (1 << 31) and r != CALLBACK_EXCEPTION else 1
        except BaseException as e:  # noqa: B036
            box.store(e)
            return CALLBACK_EXCEPTION

    box.cfunc = _PROGRESS_FN(progress_tramp)
    return box


def _call(boxes, func, *args):
    """Call a library function that may call back into Python.  A stored
    exception from a callback is raised in preference to the status."""
    boxes = [b for b in boxes if b is not None]
    for b in boxes:
        b.clear()
    status = func(*args)
    message = _decode(_funcs["diffuse_last_error"]()) if status else ""
    exc = None
    for b in boxes:
        e = b.take()
        if e is not None and exc is None:
            exc = e
    if exc is not None:
        if status and hasattr(exc, "add_note"):
            exc.add_note(f"(raised in a libdiffuse callback; the library reported: {message})")
        raise exc
    if status:
        raise DiffuseError(status, _decode(_funcs["diffuse_strerror"](status)), message)


# ---------------------------------------------------------------------------
# Handles
# ---------------------------------------------------------------------------

class _InFlight:
    """The calls in flight on one handle, on any thread: close() waits for
    them to end before it frees the C handle, so that no thread is ever inside
    a C call with a freed pointer (ctypes releases the GIL during the call).
    One instance per handle, the same code for every handle class."""
    __slots__ = ("cv", "count", "threads")

    def __init__(self):
        self.cv = threading.Condition(threading.Lock())
        self.count = 0      # holds, all threads together
        self.threads = {}   # thread ident -> its holds


class _Using:
    """with _using(a, b, ...) as (ha, hb, ...): the raw pointers of open
    handles, each held (close() waits) until the block ends; None passes
    through as None."""
    __slots__ = ("objs", "held")

    def __init__(self, objs):
        self.objs = objs
        self.held = []

    def __enter__(self):
        ptrs = []
        try:
            for o in self.objs:
                if o is None:
                    ptrs.append(None)
                else:
                    ptrs.append(o._acquire())
                    self.held.append(o)
        except BaseException:
            self.__exit__()
            raise
        return ptrs

    def __exit__(self, *exc):
        held, self.held = self.held, []
        for o in reversed(held):
            o._release()


def _using(*handles):
    return _Using(handles)


def _hcall(func, *args):
    """func(*args) with every _Handle among args replaced by its pointer and
    held for the duration of the call."""
    hs = [a for a in args if isinstance(a, _Handle)]
    if not hs:
        return func(*args)
    with _Using(hs) as ptrs:
        it = iter(ptrs)
        return func(*[next(it) if isinstance(a, _Handle) else a for a in args])


class _Handle:
    """Base of the handle classes: close(), context manager, __del__, and the
    guard that makes them safe across threads: every call that passes the C
    handle holds it (_use, _using, _hcall), and close() waits for those holds
    to end, on every thread, before it frees the handle.  A close from a
    thread that is itself inside a call using the handle (from a callback)
    raises RuntimeError instead of waiting for itself."""
    _free_name = None
    _h = None
    _guard = None

    def _adopt(self, h):
        self._free = _f(self._free_name)  # kept so that __del__ works at shutdown
        self._guard = _InFlight()
        self._h = h

    @property
    def closed(self):
        return not self._h

    def _handle(self):
        """The raw pointer, unheld: only for a check that the handle is open."""
        if not self._h:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._h

    def _acquire(self):
        g = self._guard
        if g is None:
            raise ValueError(f"{type(self).__name__} is closed")
        with g.cv:
            h = self._h
            if not h:
                raise ValueError(f"{type(self).__name__} is closed")
            tid = threading.get_ident()
            g.threads[tid] = g.threads.get(tid, 0) + 1
            g.count += 1
        return h

    def _release(self):
        g = self._guard
        with g.cv:
            tid = threading.get_ident()
            n = g.threads[tid] - 1
            if n:
                g.threads[tid] = n
            else:
                del g.threads[tid]
            g.count -= 1
            if g.count == 0:
                g.cv.notify_all()

    def _use(self):
        """with self._use() as h: the pointer, held until the block ends."""
        return _UseOne(self)

    def close(self):
        """Release the C handle (idempotent).  Calls already running on other
        threads with this handle finish first (close waits for them); calls
        that start after close has begun raise ValueError ("closed")."""
        g = self._guard
        if g is None:
            return
        with g.cv:
            if not self._h:
                return
            if threading.get_ident() in g.threads:
                raise RuntimeError(f"cannot close a {type(self).__name__} from inside a call "
                                   "that uses it (one of its callbacks)")
            h, self._h = self._h, None  # from here on new calls see it closed
            while g.count:
                g.cv.wait()
        self._free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _UseOne:
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __enter__(self):
        return self.obj._acquire()

    def __exit__(self, *exc):
        self.obj._release()


_CALLABLE_TYPES = {}


def _callable_result(a):
    """a as an instance of a subclass of its type whose call returns itself:
    the value of a property that 1.0 code still calls as a method."""
    base = type(a)
    cls = _CALLABLE_TYPES.get(base)
    if cls is None:
        cls = type("Callable" + base.__name__.capitalize(), (base,),
                   {"__call__": lambda self: self, "__slots__": ()}
                   if base is array.array else {"__call__": lambda self: self})
        _CALLABLE_TYPES[base] = cls
    if _np is not None and isinstance(a, _np.ndarray):
        return a.view(cls)
    return cls(a.typecode, a)


class Schedule(_Handle):
    """A noise schedule (diffuse_schedule).  Immutable; safe to share between
    threads.  Build one with the classmethods."""
    _free_name = "diffuse_schedule_free"

    def __init__(self, _handle):
        if not _handle:
            raise ValueError("use Schedule.linear/cosine/scaled_linear/sigmoid/from_betas")
        self._adopt(_handle)

    @classmethod
    def linear(cls, T, beta_start=1e-4, beta_end=0.02):
        """Improved DDPM's linear betas, scaled by 1000 / T."""
        return cls(_new_handle("diffuse_schedule_create_linear", _size(T, "T"),
                               float(beta_start), float(beta_end)))

    @classmethod
    def cosine(cls, T, s=0.008, max_beta=0.999):
        """Improved DDPM's cosine schedule."""
        return cls(_new_handle("diffuse_schedule_create_cosine", _size(T, "T"), float(s),
                               float(max_beta)))

    @classmethod
    def scaled_linear(cls, T, beta_start=0.00085, beta_end=0.012):
        """Latent diffusion's "scaled_linear" schedule."""
        return cls(_new_handle("diffuse_schedule_create_scaled_linear", _size(T, "T"),
                               float(beta_start), float(beta_end)))

    @classmethod
    def sigmoid(cls, T, start=-3.0, end=3.0, temp=1.0, max_beta=0.999):
        """The sigmoid schedule (Jabri et al. 2022)."""
        return cls(_new_handle("diffuse_schedule_create_sigmoid", _size(T, "T"), float(start),
                               float(end), float(temp), float(max_beta)))

    @classmethod
    def from_betas(cls, betas):
        """A schedule from caller-given betas (copied)."""
        b = _arr(betas, "d", "betas")
        return cls(_new_handle("diffuse_schedule_create_betas", b.ptr, b.n))

    def rescale_zero_snr(self):
        """A new schedule with zero terminal SNR (Lin et al. 2023)."""
        return Schedule(_new_handle("diffuse_schedule_rescale_zero_snr", self))

    def respace(self, timesteps):
        """A new schedule keeping the given steps (indices into this schedule),
        or the steps of a spec string ("ddim50", "10,20") over this schedule."""
        if isinstance(timesteps, (str, bytes)):
            timesteps = timesteps_from_spec(self.length, timesteps)
        ts = _arr(timesteps, "i", "timesteps")
        return Schedule(_new_handle("diffuse_schedule_respace", self, ts.ptr, ts.n))

    @property
    def length(self):
        """Number of steps T (for a respaced schedule, the number kept)."""
        return int(_hcall(_f("diffuse_schedule_length"), self))

    def __len__(self):
        return self.length

    @property
    def base_length(self):
        """Number of steps of the original training chain."""
        return int(_hcall(_f("diffuse_schedule_base_length"), self))

    @property
    def timesteps(self):
        """The original training index of each step, int32 [T] (a property,
        like length; calling it, timesteps(), gives the same array)."""
        n = self.length
        out = _empty("i", (n,))
        _check(_hcall(_f("diffuse_schedule_timesteps"), self, out.ptr, n))
        return _callable_result(_result(out))

    def table(self, table):
        """One coefficient table, float64 [T]: a TABLE_* constant or its name
        ("alphas_cumprod", "posterior_variance", ...)."""
        tid = _code(table, _TABLE_NAMES, "table")
        n = self.length
        out = _empty("d", (n,))
        _check(_hcall(_f("diffuse_schedule_table"), self, tid, out.ptr, n))
        return _result(out)

    def __repr__(self):
        if not self._h:
            return "<libdiffuse.Schedule closed>"
        return f"<libdiffuse.Schedule T={self.length} base_T={self.base_length}>"


class Model(_Handle):
    """A denoising model: a Python callable f(x_t, t) -> out (see the module
    docstring) with its data dimension, prediction kind and variance type.

    With classes=K the model is class-conditional (diffuse_model_create_cond):
    f(x_t, t, labels) gets the labels too, each in [0, K) or LABEL_NONE;
    unconditional=True declares that f was trained with dropped labels, which
    LABEL_NONE and guidance need.

    Samplers and VLB evaluators copy the model when they are created; they
    keep the callback alive themselves, so the Model may be closed after.

    Net.model() gives a Model whose "callback" is a reference net in C (fn is
    None); it holds its own reference to the net, so neither the Net object
    nor the Model needs to stay open for the samplers built on it.

    float_timesteps=True (since 1.1) gives f float timesteps (the original
    index, fractional for sigma-space samplers; t * 1000 / T with
    set("rescale_timesteps", 1)).  Model.external() describes a model
    without a callback, for Sampler.step_output()."""
    _free_name = "diffuse_model_free"
    fn = None
    _box = None
    net_max_batch = None  # for a net's model: the largest batch the net runs

    def __init__(self, fn, dim, prediction=PRED_EPS, variance=VAR_FIXED_SMALL, classes=None,
                 unconditional=None, float_timesteps=False):
        if not callable(fn):
            raise TypeError("fn must be callable as fn(x_t, t), or fn(x_t, t, labels) "
                            "with classes")
        pred = _code(prediction, _PRED_NAMES, "prediction")
        var = _code(variance, _VAR_NAMES, "variance")
        factor = 2 if var in (VAR_LEARNED, VAR_LEARNED_RANGE) else 1
        self.fn = fn
        self.dim = _size(dim, "dim")
        suffix = "_float" if float_timesteps else ""
        if classes is None:
            self._box = _model_trampoline(fn, factor, float_t=bool(float_timesteps))
            self._adopt(_new_handle("diffuse_model_create" + suffix, self._box.cfunc, None,
                                    self.dim, pred, var))
        else:
            self._box = _model_trampoline(fn, factor, cond=True, float_t=bool(float_timesteps))
            self._adopt(_new_handle("diffuse_model_create_cond" + suffix, self._box.cfunc, None,
                                    self.dim, pred, var, _size(classes, "classes")))
        if unconditional is not None:
            self.set("unconditional", 1 if unconditional else 0)
        self.prediction, self.variance = pred, var

    @classmethod
    def external(cls, dim, prediction=PRED_EPS, variance=VAR_FIXED_SMALL):
        """A model without a callback (diffuse_model_create_external): what the
        caller's network outputs, for Sampler.step_output()."""
        m = cls.__new__(cls)
        pred = _code(prediction, _PRED_NAMES, "prediction")
        var = _code(variance, _VAR_NAMES, "variance")
        m.dim = _size(dim, "dim")
        m._adopt(_new_handle("diffuse_model_create_external", m.dim, pred, var))
        m.prediction, m.variance = pred, var
        return m

    @classmethod
    def _of_net(cls, h, net):
        """Adopt the C model handle h that diffuse_net_model made for net."""
        m = cls.__new__(cls)
        m._adopt(h)
        m.dim, m.prediction, m.variance = net.dim, net.prediction, net.variance
        m.net_max_batch = net.max_batch
        return m

    @property
    def output_dim(self):
        """Values per row the callback returns: dim, or 2 dim with a learned variance."""
        return int(_hcall(_f("diffuse_model_output_dim"), self))

    def set(self, param, value):
        """Set a MODEL_* parameter (or its name: "clip_x0", "clip_min", ...)."""
        _check(_hcall(_f("diffuse_model_set"), self, _code(param, _MODEL_PARAMS, "parameter"),
                                       float(value)))

    def get(self, param):
        """Read a MODEL_* parameter, as a float."""
        v = c_double()
        _check(_hcall(_f("diffuse_model_get"), self, _code(param, _MODEL_PARAMS, "parameter"),
                                       byref(v)))
        return v.value

    def __repr__(self):
        state = "closed" if not self._h else f"dim={self.dim} output_dim={self.output_dim}"
        return f"<libdiffuse.Model {state}>"


class _Engine(_Handle):
    """What Sampler and Vlb share: the model's callback kept alive, the
    progress callback, set/get.  (Closing from inside a callback raises
    RuntimeError: _Handle.close.)"""
    _params = {}
    _prefix = ""

    def _init_engine(self, model, h):
        self._model_box = model._box  # C keeps model's fn pointer: keep the CFUNCTYPE
        self._progress_box = None
        self.dim = model.dim
        self._net_max_batch = model.net_max_batch
        self._adopt(h)

    _auto = False       # max_batch still to be taken from the first call
    _settings = None    # parameters set, replayed when the handle is remade

    def _first_batch(self, batch):
        """With max_batch left out: the first call's batch becomes max_batch
        (the C handle is made again for it, with the parameters and progress
        callback already set); later calls may not exceed it."""
        if not self._auto:
            return
        self._auto = False
        if batch <= self.max_batch:
            self.max_batch = batch
            return
        h = self._remake(batch)
        g = self._guard
        with g.cv:  # no call on any thread may hold the old handle
            while g.count:
                g.cv.wait()
            old, self._h = self._h, h
        self.max_batch = batch
        for param, value in (self._settings or {}).items():
            _check(_f(self._prefix + "set")(h, param, value))
        if self._progress_box is not None:
            _check(_f(self._prefix + "set_progress")(h, self._progress_box.cfunc, None))
        if old:
            self._free(old)

    def _check_batch(self, batch):
        self._first_batch(batch)
        # A net's model fails for a batch above the net's max_batch, which C
        # reports only as "model callback returned -1": say it before calling.
        lim = self._net_max_batch
        if lim is not None and batch > lim:
            raise ValueError(f"batch = {batch} is above max_batch = {lim} of the net that "
                             "runs this model")

    def set(self, param, value):
        """Set a parameter by constant or name (see the class docstring)."""
        code = _code(param, self._params, "parameter")
        _check(_hcall(_f(self._prefix + "set"), self, code, float(value)))
        if self._settings is None:
            self._settings = {}
        self._settings[code] = float(value)

    def _with_progress(self, progress, func, *args):
        """Run func with progress (fn(step, total), e.g. a ProgressBar) as the
        progress callback for this call only (None: the one registered)."""
        if progress is None:
            return self._run(func, *args)
        if not callable(progress):
            raise TypeError("progress must be callable as progress(step, total)")
        saved = self._progress_box
        self.set_progress(progress)
        try:
            return self._run(func, *args)
        finally:
            if saved is None:
                self.set_progress(None)
            else:
                _check(_hcall(_f(self._prefix + "set_progress"), self, saved.cfunc, None))
                self._progress_box = saved

    def get(self, param):
        """Read a parameter, as a float."""
        v = c_double()
        _check(_hcall(_f(self._prefix + "get"), self, _code(param, self._params, "parameter"),
                                        byref(v)))
        return v.value

    def set_progress(self, fn):
        """Register fn(step, total) -> stop, called after each step (None removes it).
        A truthy or non-zero integer return stops the run with DIFFUSE_ECANCELED."""
        with self._use() as h:
            if fn is None:
                _check(_f(self._prefix + "set_progress")(h, _PROGRESS_FN(), None))  # NULL
                self._progress_box = None
                return
            if not callable(fn):
                raise TypeError("fn must be callable as fn(step, total)")
            box = _progress_trampoline(fn)
            _check(_f(self._prefix + "set_progress")(h, box.cfunc, None))
            self._progress_box = box  # referenced for as long as C may call it

    def _run(self, func, *args):
        # Local references: should a callback replace the progress callback
        # during the run (the library refuses it; a refusal must not drop
        # the running CFUNCTYPE either), the old one outlives its own call.
        boxes = (self._model_box, self._progress_box)
        with _DeferSigint():
            _call(boxes, func, *args)


class Sampler(_Engine):
    """A sampler (diffuse_sampler) over every step of a schedule (respace the
    schedule for strided sampling).

    kind: SAMPLER_DDPM / SAMPLER_DDIM / SAMPLER_DPMPP_2M (1.0) and
    SAMPLER_EULER / SAMPLER_EULER_ANCESTRAL / SAMPLER_HEUN /
    SAMPLER_DPMPP_2M_SDE / SAMPLER_UNIPC (1.1), or "ddpm", "ddim",
    "dpmpp_2m", "euler", "euler_ancestral", "heun", "dpmpp_2m_sde", "unipc".  Parameters for
    set/get by constant or name: "eta" (DDIM, Euler ancestral),
    "num_threads", "lambda_min" (DPM-Solver++: the log-SNR clip, e.g. -5.1
    for cosine), "guidance", "guidance_rescale", "set_alpha_to_one",
    "clipped_model_output" (DDIM), "order" (DPM-Solver++, its SDE, UniPC),
    "lower_order_final" (DPM-Solver++), "sigma_grid", "grid_steps"
    (sigma-space samplers, DPM-Solver++ and UniPC), "sigma_min", "sigma_max"
    (the same: the ends of a Karras or exponential grid, 0 for the
    schedule's), "third_order_taylor" (DPM-Solver++ ORDER 3: 0, diffusers'
    weight, default; 1, the third-order Taylor weight), read-only
    "num_steps" and "position".  See diffuse.h.
    timesteps(), step_output() and reset() drive it from the caller's own
    model calls."""
    _free_name = "diffuse_sampler_free"
    _params = _SAMPLER_PARAMS
    _prefix = "diffuse_sampler_"

    def __init__(self, schedule, model, kind, max_batch=None):
        """max_batch: the largest batch a call may pass; left out (None), the
        batch of the first run, step or invert call."""
        k = _code(kind, _SAMPLER_KINDS, "sampler kind")
        mb = 1 if max_batch is None else _size(max_batch, "max_batch")
        h = _new_handle("diffuse_sampler_create", schedule, model, k, mb)
        self.kind, self.max_batch = k, mb
        self._remake = lambda n: _new_handle("diffuse_sampler_create", schedule, model, k, n)
        self._init_engine(model, h)
        self._auto = max_batch is None

    @property
    def memory(self):
        """Bytes the sampler holds, workspace included."""
        return int(_hcall(_f("diffuse_sampler_memory"), self))

    def run(self, x_T=None, seed=0, first_sample=0, batch=None, labels=None, progress=None):
        """The whole chain from x_T [batch][dim] (or from the generator's noise
        for `batch` samples when x_T is None) to x0, returned.  labels: [batch]
        class labels (LABEL_NONE allowed) for a conditional model.
        progress: fn(step, total) for this call (e.g. ProgressBar("sample"))."""
        self._handle()
        seed, first = _uint(seed, 64, "seed"), _uint(first_sample, 64, "first_sample")
        if x_T is None:
            batch = 1 if batch is None else _size(batch, "batch")
            xa, ptr = None, None
        else:
            xa = _arr(x_T, "f", "x_T")
            nb = _rows(xa, self.dim, "x_T")
            if batch is not None and batch != nb:
                raise ValueError(f"x_T holds {nb} rows of dim {self.dim}, not batch = {batch}")
            batch, ptr = nb, xa.ptr
        self._check_batch(batch)  # may remake the handle: before holding it
        out = _empty("f", _data_shape(xa, batch, self.dim))
        with self._use() as h:
            if labels is None:
                self._with_progress(progress, _f("diffuse_sampler_run"), h, ptr, seed, first,
                                    batch, out.ptr)
            else:
                la = _labels(labels, batch)
                self._with_progress(progress, _f("diffuse_sampler_run_cond"), h, ptr, la.ptr,
                                    seed, first, batch, out.ptr)
        return _result(out)

    def step(self, x_t, t, seed=0, first_sample=0, labels=None):
        """One step from schedule index t: returns x_{t-1} [batch][dim].
        labels as in run()."""
        self._handle()
        xa = _arr(x_t, "f", "x_t")
        batch = _rows(xa, self.dim, "x_t")
        self._check_batch(batch)
        out = _empty("f", _data_shape(xa, batch, self.dim))
        args = (_int(t, 32, "t"), _uint(seed, 64, "seed"),
                _uint(first_sample, 64, "first_sample"), batch, out.ptr)
        with self._use() as h:
            if labels is None:
                self._run(_f("diffuse_sampler_step"), h, xa.ptr, *args)
            else:
                la = _labels(labels, batch)
                self._run(_f("diffuse_sampler_step_cond"), h, xa.ptr, la.ptr, *args)
        return _result(out)

    @property
    def timesteps(self):
        """The model time of each step k of a trajectory, float32 [NUM_STEPS],
        descending: what the model must be called with (see step_output).  A
        property, like Schedule.timesteps (calling it gives the same array)."""
        with self._use() as h:
            v = c_double()
            _check(_f("diffuse_sampler_get")(h, SAMPLER_NUM_STEPS, byref(v)))
            n = int(v.value)
            out = _empty("f", (n,))
            _check(_f("diffuse_sampler_timesteps")(h, out.ptr, n))
        return _callable_result(_result(out))

    def reset(self):
        """Start a new trajectory (forget the multistep history)."""
        _check(_hcall(_f("diffuse_sampler_reset"), self))

    def step_output(self, k, x_t, model_out, uncond_out=None, noise=None, seed=0,
                    first_sample=0):
        """One caller-driven step (diffuse_sampler_step_output): x_t [batch][dim]
        the sample at step k, model_out [batch][output_dim] the model's output on
        it at timesteps[k] (uncond_out the unconditional one, for guidance;
        noise [batch][dim] this step's noise, or None for the generator's).
        Returns (x_next, x0): the next sample and the predicted x0."""
        self._handle()
        xa = _arr(x_t, "f", "x_t")
        batch = _rows(xa, self.dim, "x_t")
        ma = _arr(model_out, "f", "model_out")
        ua = None if uncond_out is None else _arr(uncond_out, "f", "uncond_out")
        na = None if noise is None else _arr(noise, "f", "noise")
        if ma.n % batch or (ua is not None and ua.n != ma.n):
            raise ValueError(f"model_out has {ma.n} elements (uncond_out "
                             f"{None if ua is None else ua.n}): not batch = {batch} rows "
                             "of the same width")
        if na is not None:
            _same_size(na, xa.n, "noise")
        self._check_batch(batch)  # may remake the handle: before holding it
        out = _empty("f", _data_shape(xa, batch, self.dim))
        x0 = _empty("f", _data_shape(xa, batch, self.dim))
        with self._use() as h:
            _call((), _f("diffuse_sampler_step_output"), h, _size(k, "k"), xa.ptr, ma.ptr,
                  None if ua is None else ua.ptr, None if na is None else na.ptr,
                  _uint(seed, 64, "seed"), _uint(first_sample, 64, "first_sample"), batch,
                  out.ptr, x0.ptr)
        return _result(out), _result(x0)

    def invert(self, x0, progress=None):
        """DDIM inversion: x0 [batch][dim] to the sample at the last step.
        progress as for run()."""
        self._handle()
        xa = _arr(x0, "f", "x0")
        batch = _rows(xa, self.dim, "x0")
        self._check_batch(batch)
        out = _empty("f", _data_shape(xa, batch, self.dim))
        with self._use() as h:
            self._with_progress(progress, _f("diffuse_sampler_invert"), h, xa.ptr, batch, out.ptr)
        return _result(out)


class ProgressBar:
    """A ready-made progress callback: progress=ProgressBar("sample") on
    Sampler.run, Sampler.invert or Vlb.run draws a bar with the rate and the
    time left on file (default sys.stderr): rewritten in place on a terminal,
    otherwise a line at every tenth of the work.  Returns None (continue)."""

    def __init__(self, desc="", file=None, width=30):
        import sys
        import time
        self.desc, self.width = desc, width
        self.file = sys.stderr if file is None else file
        self._time = time.monotonic
        self._t0 = None
        self._last = -1
        try:
            self._tty = self.file.isatty()
        except (AttributeError, ValueError):
            self._tty = False

    def __call__(self, step, total):
        now = self._time()
        if self._t0 is None or step <= 1:
            self._t0 = now
            self._last = -1
        el = now - self._t0
        rate = step / el if el > 0 else 0.0
        left = (total - step) / rate if rate > 0 else 0.0
        frac = step / total if total else 1.0
        tenth = int(frac * 10)
        if not self._tty and tenth == self._last and step != total:
            return None
        self._last = tenth
        done = int(frac * self.width)
        line = (f"{self.desc + ' ' if self.desc else ''}[{'#' * done}{'.' * (self.width - done)}]"
                f" {step}/{total} {rate:.1f}/s ETA {int(left) // 60:02d}:{int(left) % 60:02d}")
        if self._tty:
            self.file.write("\r" + line + ("\n" if step >= total else ""))
        else:
            self.file.write(line + "\n")
        self.file.flush()
        return None


VlbResult = collections.namedtuple("VlbResult", "total prior terms x0_mse eps_mse")
VlbResult.__doc__ = """Per-sample results of Vlb.run, in bits per dimension:
total [batch], prior [batch], terms [batch][T]; x0_mse and eps_mse [batch][T]."""


class Vlb(_Engine):
    """The variational bound evaluator (diffuse_vlb).  Parameters for set/get:
    VLB_CDF ("cdf": CDF_TANH or CDF_EXACT) and VLB_NUM_THREADS ("num_threads")."""
    _free_name = "diffuse_vlb_free"
    _params = _VLB_PARAMS
    _prefix = "diffuse_vlb_"

    def __init__(self, schedule, model, max_batch=None):
        """max_batch: the largest batch a call may pass; left out (None), the
        batch of the first run."""
        mb = 1 if max_batch is None else _size(max_batch, "max_batch")
        h = _new_handle("diffuse_vlb_create", schedule, model, mb)
        self.T = schedule.length
        self.max_batch = mb
        self._remake = lambda n: _new_handle("diffuse_vlb_create", schedule, model, n)
        self._init_engine(model, h)
        self._auto = max_batch is None

    def run(self, x0, seed=0, first_sample=0, labels=None, progress=None):
        """Evaluate the bound for x0 [batch][dim] (data in [-1, 1] on the 8-bit
        grid); returns a VlbResult of per-sample arrays.  labels: [batch]
        class labels for a conditional model.  progress: fn(step, total) for
        this call (e.g. ProgressBar("bpd"))."""
        self._handle()
        xa = _arr(x0, "f", "x0")
        batch = _rows(xa, self.dim, "x0")
        self._check_batch(batch)  # may remake the handle: before holding it
        T = self.T
        total, prior = _empty("d", (batch,)), _empty("d", (batch,))
        shape = (batch, T) if _np is not None else (batch * T,)
        terms, x0_mse, eps_mse = _empty("d", shape), _empty("d", shape), _empty("d", shape)
        args = (_uint(seed, 64, "seed"), _uint(first_sample, 64, "first_sample"), batch,
                total.ptr, prior.ptr, terms.ptr, x0_mse.ptr, eps_mse.ptr)
        with self._use() as h:
            if labels is None:
                self._with_progress(progress, _f("diffuse_vlb_run"), h, xa.ptr, *args)
            else:
                la = _labels(labels, batch)
                self._with_progress(progress, _f("diffuse_vlb_run_cond"), h, xa.ptr, la.ptr,
                                    *args)
        return VlbResult(_result(total), _result(prior), _result(terms), _result(x0_mse),
                         _result(eps_mse))


# ---------------------------------------------------------------------------
# Reference denoisers and training
# ---------------------------------------------------------------------------

class Net(_Handle):
    """A reference denoising network (diffuse_net): its weights, their
    exponential moving average (EMA) and a workspace for batches up to
    max_batch.  Build one with Net.mlp(), Net.unet() or checkpoint_load().

    Weights are chosen with `which`: NET_WEIGHTS / "weights" (the trained
    weights) or NET_EMA / "ema" (their EMA).  Parameters come and go as flat
    float32 arrays in the documented order (each Linear's weight [out][in],
    then its bias [out]; a U-Net's Conv weight [out][in][3][3] and bias,
    group norm gamma and beta).  set(): NET_NUM_THREADS ("num_threads").

    Attributes (read with diffuse_net_get): kind ("mlp" or "unet"), dim,
    output_dim (dim, or 2 dim with a learned variance), emb_dim (the
    sinusoidal embedding size; a U-Net's base_channels), prediction,
    variance, max_batch; an MLP's width and depth; a U-Net's channels,
    height, width_pixels, base_channels and groups.  Those of the other kind
    are None.  A U-Net's rows are images [channels][height][width_pixels]
    flattened: dim = channels * height * width_pixels.

    Models, trainers and samplers built on a net hold their own reference to
    it: the Net may be closed before them.  A net is used by one thread at a
    time, and that includes the models and trainers built on it."""
    _free_name = "diffuse_net_free"
    kind = dim = output_dim = emb_dim = prediction = variance = max_batch = None
    width = depth = None  # MLP
    channels = height = width_pixels = base_channels = groups = None  # U-Net

    def __init__(self, _handle=None):
        if not _handle:
            raise ValueError("use Net.mlp(...), Net.unet(...) or checkpoint_load(...)")
        self._adopt(_handle)

    def _adopt(self, handle):
        super()._adopt(handle)
        get = _f("diffuse_net_get")
        value = c_double()
        _check(_hcall(get, self, NET_KIND, byref(value)))
        kind = int(value.value)
        self.kind = _NET_KIND_NAMES.get(kind, kind)
        for name, key in list(_NET_ARCH.items()) + list(_NET_KIND_ARCH.get(kind, {}).items()):
            _check(_hcall(get, self, key, byref(value)))
            setattr(self, name, int(value.value))

    @classmethod
    def mlp(cls, dim, width=64, depth=2, emb_dim=32, prediction=PRED_EPS,
            variance=VAR_FIXED_SMALL, max_batch=256, seed=0):
        """diffuse_net_create_mlp: an MLP with a sinusoidal time embedding of
        size emb_dim and `depth` residual SiLU blocks of `width`, initialized
        from `seed` (PyTorch's default Linear initialization)."""
        pred = _code(prediction, _PRED_NAMES, "prediction")
        var = _code(variance, _VAR_NAMES, "variance")
        sizes = [_size(v, what) for v, what in ((dim, "dim"), (width, "width"),
                                                (depth, "depth"), (emb_dim, "emb_dim"),
                                                (max_batch, "max_batch"))]
        h = _new_handle("diffuse_net_create_mlp", *sizes[:4], pred, var, sizes[4],
                        _uint(seed, 64, "seed"))
        return cls(h)

    @classmethod
    def unet(cls, channels, height, width_pixels, base_channels=32, groups=8,
             prediction=PRED_EPS, variance=VAR_FIXED_SMALL, max_batch=64, seed=0):
        """diffuse_net_create_unet: a small convolutional U-Net for images
        [channels][height][width_pixels] (height and width_pixels even): two
        resolutions with base_channels and 2 base_channels channels, residual
        blocks with group norm (`groups` dividing base_channels) and the time
        embedding added per block, an additive skip connection; initialized
        from `seed` (PyTorch's default Conv2d and Linear initialization)."""
        pred = _code(prediction, _PRED_NAMES, "prediction")
        var = _code(variance, _VAR_NAMES, "variance")
        sizes = [_size(v, what) for v, what in ((channels, "channels"), (height, "height"),
                                                (width_pixels, "width_pixels"),
                                                (base_channels, "base_channels"),
                                                (groups, "groups"), (max_batch, "max_batch"))]
        h = _new_handle("diffuse_net_create_unet", *sizes[:5], pred, var, sizes[5],
                        _uint(seed, 64, "seed"))
        return cls(h)

    @classmethod
    def iddpm(cls, channels, height, width_pixels, model_channels=128, options="",
              prediction=PRED_EPS, variance=VAR_FIXED_SMALL, max_batch=64, seed=0):
        """diffuse_net_create_iddpm (libdiffuse 1.1): Improved DDPM's U-Net
        (improved-diffusion's UNetModel) for images [channels][height]
        [width_pixels], its options as a "key=value ..." string (or a dict):
        num_res_blocks, channel_mult, attention_resolutions (downsample
        rates), num_heads, num_heads_upsample, use_scale_shift_norm, dropout,
        conv_resample, num_classes, groups, time_scale."""
        if isinstance(options, dict):
            options = " ".join(
                f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                for k, v in options.items())
        pred = _code(prediction, _PRED_NAMES, "prediction")
        var = _code(variance, _VAR_NAMES, "variance")
        sizes = [_size(v, what) for v, what in ((channels, "channels"), (height, "height"),
                                                (width_pixels, "width_pixels"),
                                                (model_channels, "model_channels"),
                                                (max_batch, "max_batch"))]
        h = _new_handle("diffuse_net_create_iddpm", *sizes[:4], str(options).encode(), pred,
                        var, sizes[4], _uint(seed, 64, "seed"))
        return cls(h)

    @property
    def param_count(self):
        """Number of trainable parameters."""
        return int(_hcall(_f("diffuse_net_param_count"), self))

    def set(self, param, value):
        """Set a net parameter: NET_NUM_THREADS or "num_threads" (0: default), or
        NET_CLASSES / "classes" (a class embedding for that many classes; only
        while no model, sampler or trainer holds the net)."""
        _check(_hcall(_f("diffuse_net_set"), self, _code(param, _NET_PARAMS, "parameter"),
                                     float(value)))

    def _get(self, key):
        value = c_double()
        _check(_hcall(_f("diffuse_net_get"), self, key, byref(value)))
        return int(value.value)

    @property
    def classes(self):
        """Class embedding rows (0: the net takes no labels); settable with set()."""
        return self._get(NET_CLASSES)

    @property
    def uncond_rows(self):
        """Rows this net was trained on without a label (LABEL_NONE)."""
        return self._get(NET_UNCOND_ROWS)

    def get_params(self, which=NET_WEIGHTS):
        """A copy of the weights (or, with which="ema", their EMA): float32 [param_count]."""
        with self._use() as h:
            w = _code(which, _WHICH_NAMES, "which")
            n = self.param_count
            out = _empty("f", (n,))
            _check(_f("diffuse_net_get_params")(h, w, out.ptr, n))
            return _result(out)

    def set_params(self, values, which=NET_WEIGHTS):
        """Replace the weights (or their EMA) with param_count float32 values
        (a non-finite value is refused and nothing changes)."""
        with self._use() as h:
            w = _code(which, _WHICH_NAMES, "which")
            a = _arr(values, "f", "values")
            n = self.param_count
            if a.n != n:
                raise ValueError(f"values has {a.n} elements; the net has {n} parameters")
            _check(_f("diffuse_net_set_params")(h, w, a.ptr, n))

    def forward(self, x_t, t, which=NET_WEIGHTS, labels=None):
        """net(x_t, t): x_t [batch][dim] (any shape of batch * dim values,
        e.g. a U-Net's [batch][channels][height][width_pixels]), t [batch]
        original training timesteps (or one number for every row); returns
        [batch][output_dim].  Integer t run diffuse_net_forward(); float t
        (a float, a float array, or a list holding a float) run
        diffuse_net_forward_float(), which embeds fractional t exactly
        (libdiffuse 1.1).  labels: [batch] class labels for a net with
        classes (LABEL_NONE allowed)."""
        with self._use() as h:
            w = _code(which, _WHICH_NAMES, "which")
            xa = _arr(x_t, "f", "x_t")
            batch = _rows(xa, self.dim, "x_t")
            flt = _float_times(t)
            if isinstance(t, numbers.Real) and not hasattr(t, "__len__"):
                t = [t] * batch
            ta = _arr(t, "f" if flt else "i", "t")
            if ta.n != batch:
                raise ValueError(f"t has {ta.n} elements; x_t has {batch} rows")
            shape = (batch, self.output_dim) if _np is not None else (batch * self.output_dim,)
            out = _empty("f", shape)
            la = _labels(labels, batch) if labels is not None else None
            if flt:
                _check(_f("diffuse_net_forward_float")(h, w, xa.ptr, ta.ptr,
                                                       la.ptr if la is not None else None,
                                                       batch, out.ptr))
            elif la is None:
                _check(_f("diffuse_net_forward")(h, w, xa.ptr, ta.ptr, batch, out.ptr))
            else:
                _check(_f("diffuse_net_forward_cond")(h, w, xa.ptr, ta.ptr, la.ptr, batch, out.ptr))
            return _result(out)

    def model(self, which=NET_WEIGHTS):
        """A Model that runs this net with the given weights, for Sampler and
        Vlb.  It keeps the net alive by itself (close it when done)."""
        with self._use() as h:
            w = _code(which, _WHICH_NAMES, "which")
            out = c_void_p()  # the handle comes last here
            _check(_f("diffuse_net_model")(h, w, byref(out)))
            return Model._of_net(out.value, self)

    def __repr__(self):
        if not self._h:
            return "<libdiffuse.Net closed>"
        if self.kind == "iddpm":
            return (f"<libdiffuse.Net Improved DDPM U-Net "
                    f"{self.channels}x{self.height}x{self.width_pixels} "
                    f"model_channels={self.model_channels} levels={self.levels} "
                    f"params={self.param_count}>")
        if self.kind == "unet":
            return (f"<libdiffuse.Net U-Net {self.channels}x{self.height}x{self.width_pixels} "
                    f"base_channels={self.base_channels} groups={self.groups} "
                    f"params={self.param_count}>")
        return (f"<libdiffuse.Net MLP dim={self.dim} width={self.width} depth={self.depth} "
                f"emb_dim={self.emb_dim} params={self.param_count}>")


def _trainer_property(name, conv, doc, writable=True):
    code = _TRAINER_PARAMS[name]

    def fget(self):
        return conv(self.get(code))

    def fset(self, value):
        self.set(code, value)

    return property(fget, fset if writable else None, doc=doc)


class Trainer(_Handle):
    """A trainer (diffuse_trainer) for one Net on one Schedule: the loss,
    Adam or AdamW with gradient-norm clipping, the EMA update and timestep
    sampling.  The schedule is copied; the trainer holds its own reference
    to the net.  One thread at a time.

    set/get take a TRAINER_* constant or its name: "lr", "beta1", "beta2",
    "eps", "weight_decay", "adamw", "grad_clip", "ema_decay", "loss" (LOSS_*
    or "mse", "hybrid", "kl"), "min_snr_gamma", "timesteps" (TIMESTEPS_* or
    "uniform", "loss_second_moment"), "num_threads", and "step" (the steps
    taken, read-only).  Each is also a property (step_count for "step")."""
    _free_name = "diffuse_trainer_free"
    dim = max_batch = None

    def __init__(self, net, schedule, max_batch=None):
        mb = net.max_batch if max_batch is None else _size(max_batch, "max_batch")
        h = _new_handle("diffuse_trainer_create", net, schedule, mb)
        self._init(h, net, mb)

    def _init(self, h, net, max_batch):
        self._adopt(h)
        self.net, self.dim, self.max_batch = net, net.dim, max_batch

    @classmethod
    def _wrap(cls, h, net, max_batch):
        tr = cls.__new__(cls)
        tr._init(h, net, max_batch)
        return tr

    def set(self, param, value):
        """Set a parameter; LOSS and TIMESTEPS also take their names as values."""
        code = _code(param, _TRAINER_PARAMS, "parameter")
        if isinstance(value, str):
            names = {TRAINER_LOSS: (_LOSS_NAMES, "loss"),
                     TRAINER_TIMESTEPS: (_TIMESTEP_SAMPLER_NAMES, "timestep sampler")}
            if code not in names:
                raise TypeError(f"trainer parameter {param!r} takes a number, not {value!r}")
            value = _code(value, *names[code])
        _check(_hcall(_f("diffuse_trainer_set"), self, code, float(value)))

    def get(self, param):
        """Read a parameter, as a float."""
        v = c_double()
        _check(_hcall(_f("diffuse_trainer_get"), self,
                      _code(param, _TRAINER_PARAMS, "parameter"), byref(v)))
        return v.value

    lr = _trainer_property("lr", float, "learning rate (default 1e-3)")
    beta1 = _trainer_property("beta1", float, "Adam beta1 (default 0.9)")
    beta2 = _trainer_property("beta2", float, "Adam beta2 (default 0.999)")
    eps = _trainer_property("eps", float, "Adam epsilon (default 1e-8)")
    weight_decay = _trainer_property("weight_decay", float, "weight decay (default 0)")
    adamw = _trainer_property("adamw", bool, "True: decoupled weight decay (AdamW, default)")
    grad_clip = _trainer_property("grad_clip", float, "max gradient norm; 0: off (default)")
    ema_decay = _trainer_property("ema_decay", float, "EMA decay (default 0.999)")
    loss = _trainer_property("loss", int, "LOSS_* (default LOSS_MSE); a name may be set")
    min_snr_gamma = _trainer_property("min_snr_gamma", float, "min-SNR gamma; 0: off")
    timesteps = _trainer_property("timesteps", int, "TIMESTEPS_* (default uniform)")
    num_threads = _trainer_property("num_threads", int, "OpenMP threads; 0: default")
    label_dropout = _trainer_property("label_dropout", float,
                                      "probability of training a labelled row without its "
                                      "label (default 0; nets with classes)")
    step_count = _trainer_property("step", int, "steps taken so far (read-only)",
                                   writable=False)

    def step(self, x0, seed=0, labels=None):
        """One training step on the batch x0 [batch][dim]; returns the batch's
        mean loss.  Step k draws row b's timestep and noise from (seed,
        sample k * 2^32 + b): the same seed may be passed at every step.
        labels: [batch] class labels for a net with classes."""
        with self._use() as h:
            xa = _arr(x0, "f", "x0")
            batch = _rows(xa, self.dim, "x0")
            loss = c_double()
            if labels is None:
                _check(_f("diffuse_trainer_step")(h, xa.ptr, batch, _uint(seed, 64, "seed"),
                                                  byref(loss)))
            else:
                la = _labels(labels, batch)
                _check(_f("diffuse_trainer_step_cond")(h, xa.ptr, la.ptr, batch,
                                                       _uint(seed, 64, "seed"), byref(loss)))
            return loss.value

    # The split step (libdiffuse 1.1) for data-parallel training: every worker
    # calls compute_grads() on its slice of the global batch, the workers' get_grads()
    # are summed (in a fixed order) and given back with set_grads(), their records()
    # concatenated in row order, and every worker calls apply(records, global_batch).

    def compute_grads(self, x0, seed, first_sample, global_batch, labels=None):
        """Gradient of rows first_sample .. first_sample + len(x0) - 1 of a global
        batch of global_batch rows into the trainer's buffer; returns the slice's
        share of the global mean loss.  Nothing is updated until apply()."""
        h = self._handle()
        xa = _arr(x0, "f", "x0")
        count = _rows_of(xa.n, self.dim, "x0")
        la = _labels(labels, count) if labels is not None else None
        loss = c_double()
        _check(_f("diffuse_trainer_compute_grads")(
            h, xa.ptr, la.ptr if la is not None else None, count, _uint(seed, 64, "seed"),
            _uint(first_sample, 64, "first_sample"), _size(global_batch, "global_batch"),
            byref(loss)))
        return loss.value

    def _grad_buffer(self):
        g = _PF()
        n = c_size_t()
        _check(_f("diffuse_trainer_grads")(self._handle(), byref(g), byref(n)))
        return g, n.value

    def get_grads(self):
        """A copy of the trainer's gradient buffer (float32, one per parameter)."""
        g, n = self._grad_buffer()
        out = _empty("f", (n,))
        if n:
            ctypes.memmove(out.ptr, g, n * ctypes.sizeof(c_float))
        return _result(out)

    def set_grads(self, grads):
        """Overwrite the trainer's gradient buffer (e.g. with the sum over workers)."""
        g, n = self._grad_buffer()
        ga = _arr(grads, "f", "grads")
        if ga.n != n:
            raise ValueError(f"grads has {ga.n} values, the net {n} parameters")
        if n:
            ctypes.memmove(g, ga.ptr, n * ctypes.sizeof(c_float))

    def records(self, count):
        """The pending slice's row records [count][TRAINER_RECORD_WIDTH]: t, importance
        weight, unweighted loss, 1 when trained without a label."""
        count = _size(count, "count")
        out = _empty("d", (count, TRAINER_RECORD_WIDTH))
        _check(_f("diffuse_trainer_records")(self._handle(), out.ptr, count))
        return _result(out)

    def apply(self, global_batch, records=None):
        """Apply the gradient buffer as one step of global_batch rows, with every
        row's record in row order (None: the pending slice is the whole batch);
        returns the global batch's mean loss."""
        global_batch = _size(global_batch, "global_batch")
        ra = _arr(records, "d", "records") if records is not None else None
        if ra is not None and ra.n != global_batch * TRAINER_RECORD_WIDTH:
            raise ValueError(f"records has {ra.n} values, not {global_batch} rows of "
                             f"{TRAINER_RECORD_WIDTH}")
        loss = c_double()
        _check(_f("diffuse_trainer_apply")(self._handle(), ra.ptr if ra is not None else None,
                                           global_batch, byref(loss)))
        return loss.value

    def __repr__(self):
        if not self._h:
            return "<libdiffuse.Trainer closed>"
        return f"<libdiffuse.Trainer dim={self.dim} step={self.step_count}>"


# ---------------------------------------------------------------------------
# Module-level functions
# ---------------------------------------------------------------------------

def normal_fill(seed, sample, step, n):
    """n standard normal float32 values: elements 0 .. n-1 of the stream
    (seed, sample, step)."""
    n = _size(n, "n")
    out = _empty("f", (n,))
    _check(_f("diffuse_normal_fill")(_uint(seed, 64, "seed"), _uint(sample, 64, "sample"),
                                     _uint(step, 32, "step"), out.ptr, n))
    return _result(out)


def _xt(x, t, what="x0"):
    xa = _arr(x, "f", what)
    ta = _batch_t(t, xa)
    return xa, ta, ta.n, _dim(xa.n, ta.n, what)


def q_sample(schedule, x0, t, noise):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per row at t[b]."""
    xa, ta, batch, dim = _xt(x0, t)
    na = _arr(noise, "f", "noise")
    _same_size(na, batch * dim, "noise")
    out = _empty("f", _data_shape(xa, batch, dim))
    _check(_hcall(_f("diffuse_q_sample"), schedule, xa.ptr, ta.ptr, na.ptr, batch, dim,
                                  out.ptr))
    return _result(out)


def q_sample_seeded(schedule, x0, t, seed, first_sample=0, step=0):
    """x_t with noise from the generator (row b: sample first_sample + b);
    returns (x_t, noise)."""
    xa, ta, batch, dim = _xt(x0, t)
    shape = _data_shape(xa, batch, dim)
    out, noise = _empty("f", shape), _empty("f", shape)
    _check(_hcall(
        _f("diffuse_q_sample_seeded"), schedule, xa.ptr, ta.ptr, _uint(seed, 64, "seed"),
        _uint(first_sample, 64, "first_sample"), _uint(step, 32, "step"), batch, dim, out.ptr,
        noise.ptr))
    return _result(out), _result(noise)


def q_mean_variance(schedule, x0, t):
    """q(x_t | x0): (mean [batch][dim], variance [batch], log_variance [batch])."""
    xa, ta, batch, dim = _xt(x0, t)
    mean = _empty("f", _data_shape(xa, batch, dim))
    var, logvar = _empty("d", (batch,)), _empty("d", (batch,))
    _check(_hcall(_f("diffuse_q_mean_variance"), schedule, xa.ptr, ta.ptr, batch, dim,
                                         mean.ptr, var.ptr, logvar.ptr))
    return _result(mean), _result(var), _result(logvar)


def q_posterior(schedule, x0, x_t, t):
    """q(x_{t-1} | x_t, x0): (mean [batch][dim], variance [batch],
    log_variance [batch], clipped at t = 0)."""
    xa, ta, batch, dim = _xt(x0, t)
    xt = _arr(x_t, "f", "x_t")
    _same_size(xt, batch * dim, "x_t")
    mean = _empty("f", _data_shape(xa, batch, dim))
    var, logvar = _empty("d", (batch,)), _empty("d", (batch,))
    _check(_hcall(_f("diffuse_q_posterior"), schedule, xa.ptr, xt.ptr, ta.ptr, batch, dim,
                                     mean.ptr, var.ptr, logvar.ptr))
    return _result(mean), _result(var), _result(logvar)


def predict_convert(schedule, from_kind, to_kind, x_t, t, prediction):
    """Convert a prediction [batch][dim] between PRED_EPS, PRED_X0 and PRED_V
    (or "eps", "x0", "v") at x_t and t."""
    fk = _code(from_kind, _PRED_NAMES, "prediction kind")
    tk = _code(to_kind, _PRED_NAMES, "prediction kind")
    pa, ta, batch, dim = _xt(prediction, t, "prediction")
    xt = _arr(x_t, "f", "x_t")
    _same_size(xt, batch * dim, "x_t")
    out = _empty("f", _data_shape(pa, batch, dim))
    _check(_hcall(_f("diffuse_predict_convert"), schedule, fk, tk, xt.ptr, ta.ptr, pa.ptr,
                                         batch, dim, out.ptr))
    return _result(out)


def timesteps_from_spec(T, spec):
    """Improved DDPM's space_timesteps(T, spec): the kept steps, int32, ascending."""
    if isinstance(spec, str):
        spec = spec.encode("utf-8")
    if not isinstance(spec, bytes):
        raise TypeError("spec must be a str such as \"ddim50\" or \"10,15,20\"")
    if b"\0" in spec:
        raise ValueError("spec contains a NUL character")
    T = _size(T, "T")
    f = _f("diffuse_timesteps_from_spec")
    n = c_size_t(0)
    _check(f(T, spec, None, 0, byref(n)))  # size query
    out = _empty("i", (n.value,))
    _check(f(T, spec, out.ptr, n.value, byref(n)))
    return _result(out)


def timesteps_spacing(T, N, spacing, offset=0):
    """diffusers' spacing of N steps out of T (SPACING_* or "leading",
    "trailing", "linspace"), plus offset, int32 ascending."""
    N = _size(N, "N")
    out = _empty("i", (N,))
    _check(_f("diffuse_timesteps_spacing")(_size(T, "T"), N,
                                           _code(spacing, _SPACING_NAMES, "spacing"),
                                           _int(offset, 32, "offset"), out.ptr, N))
    return _result(out)


def timesteps_rescale(t, base_T):
    """float32 t * (1000 / base_T), as models trained with rescale_timesteps expect."""
    ta = _arr(t, "i", "t")
    out = _empty("f", ta.shape if _np is not None else (ta.n,))
    _check(_f("diffuse_timesteps_rescale")(ta.ptr, ta.n, _size(base_T, "base_T"), out.ptr))
    return _result(out)


def p_mean_variance(model, schedule, x_t, t, model_out):
    """p(x_{t-1} | x_t) from a model output [batch][output_dim]: returns
    (mean, log_variance, x0), each [batch][dim]."""
    xa, ta, batch, dim = _xt(x_t, t, "x_t")
    if dim != model.dim and batch:
        raise ValueError(f"x_t rows have {dim} elements; the model's dim is {model.dim}")
    mo = _arr(model_out, "f", "model_out")
    _same_size(mo, batch * model.output_dim, "model_out")
    shape = _data_shape(xa, batch, dim)
    mean, logvar, x0 = _empty("f", shape), _empty("f", shape), _empty("f", shape)
    _check(_hcall(_f("diffuse_p_mean_variance"), model, schedule, xa.ptr, ta.ptr,
                                         mo.ptr, batch, mean.ptr, logvar.ptr, x0.ptr))
    return _result(mean), _result(logvar), _result(x0)


def _elementwise(what, *xs):
    """float64 _Arrs of one common size n (numpy broadcasts; without numpy a
    scalar is repeated) and the result shape."""
    np = _np
    if np is not None:
        arrs = np.broadcast_arrays(*[np.asarray(x, dtype=np.float64) for x in xs])
        conv = [_arr(a, "d", what) for a in arrs]
        return conv, conv[0].shape
    flat = []
    for x in xs:
        flat.append(_flatten(x, float)[0])
    n = max(len(v) for v in flat)
    conv = []
    for x, vals in zip(xs, flat):
        if len(vals) == 1 and n != 1:
            vals = vals * n
        if len(vals) != n:
            raise ValueError(f"{what}: arrays of {len(vals)} and {n} elements")
        conv.append(_arr(array.array("d", vals), "d", what))
    return conv, (n,)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, nats."""
    (a, b, c, d), shape = _elementwise("normal_kl", mean1, logvar1, mean2, logvar2)
    out = _empty("d", shape)
    _check(_f("diffuse_normal_kl")(a.ptr, b.ptr, c.ptr, d.ptr, a.n, out.ptr))
    return _result(out)


def standard_normal_cdf(x, mode=CDF_TANH):
    """The standard normal CDF per element (CDF_TANH or CDF_EXACT)."""
    (xa,), shape = _elementwise("standard_normal_cdf", x)
    out = _empty("d", shape)
    _check(_f("diffuse_standard_normal_cdf")(xa.ptr, xa.n, _code(mode, _CDF_NAMES, "mode"),
                                             out.ptr))
    return _result(out)


def discretized_gaussian_log_likelihood(x, mean, log_scale, mode=CDF_TANH):
    """log-likelihood (nats) of x on the 8-bit grid in [-1, 1] under
    N(mean, exp(log_scale)^2) discretized to bins of width 2/255."""
    (xa, ma, la), shape = _elementwise("discretized_gaussian_log_likelihood", x, mean,
                                       log_scale)
    out = _empty("d", shape)
    _check(_f("diffuse_discretized_gaussian_log_likelihood")(
        xa.ptr, ma.ptr, la.ptr, xa.n, _code(mode, _CDF_NAMES, "mode"), out.ptr))
    return _result(out)


def prior_bpd(schedule, x0, batch=None):
    """KL(q(x_{T-1} | x0) || N(0, 1)) per sample, bits/dim, float64 [batch].
    batch defaults to the leading dimension of x0 (1 for a flat x0)."""
    xa = _arr(x0, "f", "x0")
    batch = xa.rows() if batch is None else _size(batch, "batch")
    dim = _dim(xa.n, batch, "x0")
    out = _empty("d", (batch,))
    _check(_hcall(_f("diffuse_prior_bpd"), schedule, xa.ptr, batch, dim, out.ptr))
    return _result(out)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

def checkpoint_format_version():
    """The checkpoint format version the loaded library writes (it reads
    this version and older ones)."""
    return int(_f("diffuse_checkpoint_format_version")())


def _fspath(path):
    """A file name for C: str, bytes or os.PathLike, through os.fsencode."""
    p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError("path contains a NUL character")
    return p


def checkpoint_save(path, net, trainer=None, meta=None):
    """Save net (architecture, weights, EMA) and, if given, the state of the
    trainer training it, atomically (a temporary file renamed over path).
    meta (str, since 1.1): a text stored beside them (at most
    CHECKPOINT_META_MAX bytes of UTF-8, no NUL), read back by
    checkpoint_read_meta()."""
    p = _fspath(path)
    if meta is None:
        _check(_hcall(_f("diffuse_checkpoint_save"), p, net, trainer))
        return
    if not isinstance(meta, str):
        raise TypeError(f"meta must be a str, not {type(meta).__name__}")
    m = meta.encode("utf-8")
    if b"\0" in m:
        raise ValueError("meta contains a NUL character")
    _check(_hcall(_f("diffuse_checkpoint_save_meta"), p, net, trainer, m))


def checkpoint_read_meta(path):
    """The text a checkpoint was saved with (checkpoint_save(meta=...)), or
    "" when it has none (since 1.1)."""
    p = _fspath(path)
    n = c_size_t(0)
    _check(_f("diffuse_checkpoint_read_meta")(p, None, 0, byref(n)))
    buf = ctypes.create_string_buffer(n.value + 1)
    _check(_f("diffuse_checkpoint_read_meta")(p, buf, n.value + 1, byref(n)))
    return buf.raw[:n.value].decode("utf-8", errors="replace")


def checkpoint_load(path, max_batch, schedule=None, trainer_batch=0, max_workspace=None):
    """Load a checkpoint: returns (Net, Trainer or None).  The net runs
    batches up to max_batch.  With a schedule (it must have the betas the
    checkpoint recorded, bit for bit) the trainer's state is restored too,
    for batches up to trainer_batch (0: max_batch), so that training goes on
    exactly as if it had not stopped.  max_workspace: the most bytes of
    workspace the load may allocate beyond what the file's own bytes back
    (None: the library's default, CHECKPOINT_DEFAULT_MAX_WORKSPACE);
    a file whose net needs more is refused before anything is allocated.
    Raise it for a trusted file of a large net (libdiffuse 1.1)."""
    p = _fspath(path)
    mb = _size(max_batch, "max_batch")
    if max_workspace is None:
        fn, extra = _f("diffuse_checkpoint_load"), ()
    else:
        if isinstance(max_workspace, bool) or not isinstance(max_workspace, int):
            raise TypeError("max_workspace must be an int (bytes) or None, not %s"
                            % type(max_workspace).__name__)
        if not 1 <= max_workspace <= 1 << 62:
            raise ValueError("max_workspace = %d bytes is outside [1, 2^62]" % max_workspace)
        fn, extra = _f("diffuse_checkpoint_load_limit"), (max_workspace,)
    net_h, tr_h = c_void_p(), c_void_p()
    if schedule is None:
        if trainer_batch:
            raise ValueError("trainer_batch without a schedule: no trainer is loaded")
        tb = 0
        _check(fn(p, mb, byref(net_h), None, 0, None, *extra))
    else:
        tb = mb if trainer_batch == 0 else _size(trainer_batch, "trainer_batch")
        _check(_hcall(fn, p, mb, byref(net_h), schedule, tb, byref(tr_h), *extra))
    net = Net(net_h.value)  # owned from here on: freed by close() or __del__
    trainer = Trainer._wrap(tr_h.value, net, tb) if tr_h.value else None
    if trainer is not None:
        trainer.dim = net.dim
    return net, trainer


# The diffusers-style scheduler (its own module; it uses the names above).
from .scheduler import Scheduler, SchedulerOutput  # noqa: E402
