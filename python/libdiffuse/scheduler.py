"""A diffusers-style scheduler over libdiffuse's caller-driven stepping.

    from libdiffuse.scheduler import Scheduler
    sched = Scheduler.from_config(json.load(open("scheduler_config.json")))
    sched.set_timesteps(25)
    x = sched.init_noise(batch, shape, seed=0)          # or your own N(0, 1) noise
    for t in sched.timesteps:
        out = unet(sched.scale_model_input(x, t), t)     # your model, your device
        x, x0 = sched.step(out, t, x)

The scheduler kind comes from the config's "_class_name" (DDPMScheduler,
DDIMScheduler, DPMSolverMultistepScheduler, with algorithm_type
"sde-dpmsolver++" DPM-Solver++(2M) SDE, UniPCMultistepScheduler,
EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
HeunDiscreteScheduler) or the `kind` argument.  Every config key is either mapped to a libdiffuse setting or
refused: an unknown key, or a value libdiffuse cannot honour, raises
ValueError naming the key (keys starting with "_" are metadata and ignored).

Differences from diffusers, all documented in the C header: the sample
passed between steps is always the one the model sees (diffusers' Euler-family
samples are it times sqrt(1 + sigma^2); here init_noise_sigma is 1 and
scale_model_input returns the sample unchanged, so a pipeline written for
diffusers runs as is); coefficients are computed in double; DDIM's previous
step comes from the timestep list (NUMERICS trap 7).  Grids follow
diffusers: Euler and Heun take a Karras or exponential grid's ends from
their spaced timesteps (the sampler's SIGMA_MIN / SIGMA_MAX; Euler's
sigma_min / sigma_max config keys replace them, as in diffusers'
EulerDiscreteScheduler; no effect without such a grid), the multistep
solvers span the whole training chain and list the model times rounded
(DPM-Solver++ keeps them fractional for squaredcos_cap_v2, as diffusers);
DPM-Solver++ and UniPC space their timesteps as diffusers' multistep
schedulers do (N + 1 points, the last dropped, for linspace and leading),
DPM-Solver++ below lambda_min_clipped (the grid rebuilt below the clip,
as diffusers applies it).  solver_order=3
is DPM-Solver++(3M) with diffusers' weights (second order, as diffusers');
the keyword argument third_order_taylor=True (not a diffusers key) takes the
Taylor weight of its second difference instead, third order (the sampler's
THIRD_ORDER_TAYLOR, see diffuse.h).

step() takes numpy arrays, Python lists, or torch CPU tensors (float32,
contiguous: no copy; the results are torch tensors then).
"""

import math
import numbers
import sys

from . import (Model, Sampler, Schedule, timesteps_spacing, normal_fill, PRED_EPS, PRED_V,
               PRED_X0, RNG_STEP_INITIAL, SIGMAS_EXPONENTIAL, SIGMAS_KARRAS, VAR_FIXED_LARGE,
               VAR_FIXED_SMALL, VAR_LEARNED_RANGE)



def _numpy():
    """numpy as the binding uses it (None without numpy or with
    LIBDIFFUSE_NO_NUMPY=1)."""
    return sys.modules[__package__]._np

_CLASS_KINDS = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "HeunDiscreteScheduler": "heun",
}
_SIGMA_KINDS = ("euler", "euler_ancestral", "heun")
_DPM_KINDS = ("dpmpp_2m", "dpmpp_2m_sde", "unipc")
_PREDICTIONS = {"epsilon": PRED_EPS, "sample": PRED_X0, "v_prediction": PRED_V}
_VARIANCES = {"fixed_small": VAR_FIXED_SMALL, "fixed_large": VAR_FIXED_LARGE,
              "learned_range": VAR_LEARNED_RANGE}

# Keys with the values libdiffuse honours only as diffusers' defaults: key ->
# predicate on the value.
_ONLY = {
    "algorithm_type": lambda v: v in ("dpmsolver++", "sde-dpmsolver++"),
    "solver_type": lambda v: v in ("midpoint", "bh2"),
    "predict_x0": lambda v: v is True,
    "disable_corrector": lambda v: not v,
    "solver_p": lambda v: v is None,
    "use_flow_sigmas": lambda v: v is False,
    "flow_shift": lambda v: v is None or v == 1.0,
    "use_dynamic_shifting": lambda v: v is False,
    "final_sigmas_type": lambda v: v == "zero",
    "interpolation_type": lambda v: v == "linear",
    "timestep_type": lambda v: v == "discrete",
    "lambda_min_clipped": lambda v: v is None or (isinstance(v, numbers.Real) and
                                                  not math.isnan(v) and v != float("inf")),
    "variance_type_dpm": lambda v: v is None,
    "euler_at_final": lambda v: v is False,
    "use_lu_lambdas": lambda v: v is False,
    "use_beta_sigmas": lambda v: v is False,
    "skip_prk_steps": lambda v: True,
}

_KNOWN = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
          "prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one",
          "clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio",
          "sample_max_value", "rescale_betas_zero_snr", "use_karras_sigmas",
          "use_exponential_sigmas", "solver_order", "lower_order_final", "variance_type",
          "sigma_min", "sigma_max"} | set(_ONLY)


class SchedulerOutput(tuple):
    """(prev_sample, pred_original_sample), also by those names."""

    def __new__(cls, prev_sample, pred_original_sample):
        return super().__new__(cls, (prev_sample, pred_original_sample))

    prev_sample = property(lambda self: self[0])
    pred_original_sample = property(lambda self: self[1])


def _torch_of(x):
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch
        return torch
    return None


class Scheduler:
    """A scheduler-style object; build it with Scheduler.from_config()."""

    def __init__(self, kind="ddim", num_train_timesteps=1000, beta_schedule="linear",
                 beta_start=0.0001, beta_end=0.02, trained_betas=None,
                 prediction_type="epsilon", variance_type="fixed_small",
                 timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True,
                 clip_sample=False, clip_sample_range=1.0, thresholding=False,
                 dynamic_thresholding_ratio=0.995, sample_max_value=1.0,
                 rescale_betas_zero_snr=False, sigmas="schedule", solver_order=2,
                 lower_order_final=True, eta=0.0, seed=0, lambda_min_clipped=None,
                 third_order_taylor=False, sigma_min=None, sigma_max=None):
        self.kind = kind
        self._beta_schedule = beta_schedule
        self._lambda_min = (float("-inf") if lambda_min_clipped is None
                            else float(lambda_min_clipped))
        self.T = int(num_train_timesteps)
        if trained_betas is not None:
            base = Schedule.from_betas(list(trained_betas))
        elif beta_schedule == "linear":  # libdiffuse scales by 1000 / T: undo it
            base = Schedule.linear(self.T, beta_start * self.T / 1000.0,
                                   beta_end * self.T / 1000.0)
        elif beta_schedule == "scaled_linear":
            base = Schedule.scaled_linear(self.T, beta_start, beta_end)
        elif beta_schedule == "squaredcos_cap_v2":
            base = Schedule.cosine(self.T)
        else:
            raise ValueError(f"beta_schedule {beta_schedule!r} is not supported (linear, "
                             "scaled_linear, squaredcos_cap_v2, or trained_betas)")
        if rescale_betas_zero_snr:
            z = base.rescale_zero_snr()
            base.close()
            base = z
        self._base = base
        if prediction_type not in _PREDICTIONS:
            raise ValueError(f"prediction_type {prediction_type!r} is not supported "
                             f"({', '.join(_PREDICTIONS)})")
        if variance_type not in _VARIANCES:
            raise ValueError(f"variance_type {variance_type!r} is not supported "
                             f"({', '.join(_VARIANCES)})")
        if timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"timestep_spacing {timestep_spacing!r} is not supported "
                             "(leading, trailing, linspace)")
        self._pred = _PREDICTIONS[prediction_type]
        self._var = _VARIANCES[variance_type] if kind == "ddpm" else VAR_FIXED_SMALL
        self._spacing, self._offset = timestep_spacing, int(steps_offset)
        self._model_params = {}
        if thresholding:
            self._model_params["threshold_percentile"] = dynamic_thresholding_ratio
            self._model_params["threshold_max"] = sample_max_value
        elif clip_sample:
            self._model_params.update(clip_x0=1, clip_min=-clip_sample_range,
                                      clip_max=clip_sample_range)
        self._sampler_params = {}
        if kind == "ddim":
            self._sampler_params.update(set_alpha_to_one=1 if set_alpha_to_one else 0,
                                        clipped_model_output=0, eta=eta)
        elif kind in ("dpmpp_2m", "dpmpp_2m_sde"):
            self._sampler_params.update(order=solver_order,
                                        lower_order_final=1 if lower_order_final else 0)
            if third_order_taylor and kind == "dpmpp_2m":
                self._sampler_params["third_order_taylor"] = 1
        elif kind == "unipc":
            self._sampler_params["order"] = solver_order
        elif kind == "euler_ancestral":
            self._sampler_params["eta"] = 1.0 if eta == 0.0 else eta
        for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if v is not None and (kind != "euler" or not isinstance(v, numbers.Real) or
                                  not math.isfinite(v) or v <= 0):
                raise ValueError(f"{name} = {v!r}: a finite sigma > 0 of the Euler "
                                 "scheduler (EulerDiscreteScheduler) only")
        # diffusers' EulerDiscreteScheduler: the ends of a Karras or
        # exponential grid (None: the sigmas of the spaced timesteps)
        self._grid_ends = (sigma_min, sigma_max)
        self._sigmas = sigmas
        self._seed = seed
        self.init_noise_sigma = 1.0
        self._sampler = self._schedule = None
        self.timesteps = None

    @classmethod
    def from_config(cls, config, kind=None, **kwargs):
        """A scheduler from a diffusers scheduler_config.json dict.  kind
        overrides the config's "_class_name".  kwargs: eta (DDIM, Euler
        ancestral), seed (the generator's, used when step() gets no noise),
        third_order_taylor (DPM-Solver++ with solver_order 3: True takes the
        third-order Taylor weight instead of diffusers')."""
        cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        if kind is None:
            name = config.get("_class_name")
            if name not in _CLASS_KINDS:
                raise ValueError(f"_class_name {name!r} is not supported: pass kind= or use "
                                 f"one of {', '.join(_CLASS_KINDS)}")
            kind = _CLASS_KINDS[name]
        if kind == "dpmpp_2m" and cfg.get("algorithm_type") == "sde-dpmsolver++":
            kind = "dpmpp_2m_sde"
        for k, v in cfg.items():
            if k not in _KNOWN:
                raise ValueError(f"unknown scheduler config key {k!r}")
            if k in _ONLY and not _ONLY[k](v):
                raise ValueError(f"config key {k!r} = {v!r} is not supported by libdiffuse")
        if "algorithm_type" in cfg and kind not in ("dpmpp_2m", "dpmpp_2m_sde"):
            raise ValueError("config key 'algorithm_type' belongs to DPMSolverMultistepScheduler")
        if cfg.get("algorithm_type") == "sde-dpmsolver++" and kind != "dpmpp_2m_sde":
            raise ValueError("config key 'algorithm_type' = 'sde-dpmsolver++' needs kind "
                             "dpmpp_2m_sde")
        if cfg.get("solver_type", "bh2" if kind == "unipc" else "midpoint") != (
                "bh2" if kind == "unipc" else "midpoint"):
            raise ValueError(f"config key 'solver_type' = {cfg['solver_type']!r} is not "
                             f"supported for {kind} (libdiffuse has "
                             f"{'bh2' if kind == 'unipc' else 'midpoint'})")
        lmc = cfg.get("lambda_min_clipped")
        if lmc is not None and lmc != float("-inf") and kind not in ("dpmpp_2m", "dpmpp_2m_sde"):
            raise ValueError("config key 'lambda_min_clipped' belongs to "
                             "DPMSolverMultistepScheduler")
        if cfg.get("use_karras_sigmas") and cfg.get("use_exponential_sigmas"):
            raise ValueError("config keys 'use_karras_sigmas' and 'use_exponential_sigmas' "
                             "are exclusive")
        sig = "schedule"
        for key, grid in (("use_karras_sigmas", "karras"),
                          ("use_exponential_sigmas", "exponential")):
            if cfg.pop(key, False):
                if kind not in _SIGMA_KINDS + _DPM_KINDS:
                    raise ValueError(f"config key {key!r} is supported by the Euler, Heun, "
                                     "DPM-Solver++ and UniPC schedulers only")
                if key == "use_exponential_sigmas" and kind == "unipc":
                    raise ValueError("config key 'use_exponential_sigmas' is not supported "
                                     "for UniPC")
                sig = grid
        if kind != "ddpm" and cfg.get("variance_type") not in (None, "fixed_small"):
            raise ValueError(f"config key 'variance_type' = {cfg['variance_type']!r} is "
                             "supported by DDPMScheduler only")
        for key in set(_ONLY) & set(cfg):
            if key != "lambda_min_clipped":
                del cfg[key]
        if cfg.get("variance_type") is None:
            cfg.pop("variance_type", None)
        return cls(kind=kind, sigmas=sig, **cfg, **kwargs)

    def set_timesteps(self, num_inference_steps):
        """Build the sampler's timestep list for num_inference_steps steps."""
        n = int(num_inference_steps)
        self._close_sampler()
        self._ends = (0.0, 0.0)
        if self._sigmas != "schedule":
            self._schedule = None  # on the whole chain, GRID_STEPS = n
            if self.kind in _SIGMA_KINDS:
                # diffusers' Euler and Heun: the grid between the sigmas of
                # their first and last spaced timestep
                keep = [int(v) for v in self._euler_spacing(n)]
                sig = self._base.table("sqrt_recipm1_alphas_cumprod")
                lo, hi = min(keep), max(keep)
                self._ends = (0.0 if lo == 0 else float(sig[lo]),
                              0.0 if hi == self.T - 1 else float(sig[hi]))
                # EulerDiscreteScheduler's sigma_min / sigma_max config keys
                self._ends = tuple(self._ends[i] if self._grid_ends[i] is None
                                   else float(self._grid_ends[i]) for i in range(2))
        elif self.kind in _DPM_KINDS:
            keep = self._multistep_spacing(n)
            self._schedule = self._base.respace(sorted(set(keep)))
        else:
            keep = timesteps_spacing(self.T, n, self._spacing, self._offset)
            self._schedule = self._base.respace(sorted(int(v) for v in keep))
        self._n = n
        self._model = Model.external(1, self._pred, self._var)
        self._dim = self._batch = None
        self._sampler = self._make(self._model)
        ts = self._sampler.timesteps()
        if self.kind in _DPM_KINDS and self._sigmas == "karras" and (
                self.kind == "unipc" or self._beta_schedule != "squaredcos_cap_v2"):
            # diffusers rounds the model times of these grids (the solver
            # keeps the exact levels)
            ts = [float(round(float(v))) for v in ts]
            np_ = _numpy()
            if np_ is not None:
                ts = np_.asarray(ts, dtype=np_.float32)
        self.timesteps = ts
        self._k = 0

    def _euler_spacing(self, n):
        """diffusers' Euler / Heun timesteps (float, descending)."""
        T = self.T
        if self._spacing == "linspace":
            return [T - 1 - i * (T - 1) / (n - 1) if n > 1 else T - 1.0 for i in range(n)]
        if self._spacing == "leading":
            r = T // n
            return [float(i * r + self._offset) for i in range(n - 1, -1, -1)]
        r = T / n
        return [float(round(T - i * r) - 1) for i in range(n)]

    def _multistep_spacing(self, n):
        """diffusers' DPMSolverMultistep / UniPCMultistep timesteps (int,
        descending), below lambda_min_clipped for DPM-Solver++: the last
        timestep is T minus the number of training steps whose lambda is
        below the clip."""
        T = self.T
        last = T
        if self.kind != "unipc" and self._lambda_min != float("-inf"):
            ab = self._base.table("alphas_cumprod")
            lam = [0.5 * (math.log(a) - math.log1p(-a)) if 0.0 < a < 1.0
                   else (float("-inf") if a <= 0.0 else float("inf")) for a in ab]
            last = T - sum(1 for v in lam if v < self._lambda_min)
        if self._spacing == "linspace":
            step = (last - 1) / n  # numpy's linspace: i * step, the end exact
            pts = [round(i * step) for i in range(n)] + [last - 1]
            return [int(v) for v in pts[::-1][:-1]]
        if self._spacing == "leading":
            r = last // (n + 1)
            return [int(i * r + self._offset) for i in range(n, 0, -1)]
        r = T / n
        count = math.ceil(last / r)
        return [int(round(last - i * r) - 1) for i in range(count)]

    def _make(self, model):
        smp = Sampler(self._schedule or self._base, model, self.kind,
                      max(1, self._batch or 1))
        for k, v in self._sampler_params.items():
            smp.set(k, v)
        if self._sigmas != "schedule":
            smp.set("sigma_grid", SIGMAS_KARRAS if self._sigmas == "karras"
                    else SIGMAS_EXPONENTIAL)
            smp.set("grid_steps", self._n)
            smp.set("sigma_min", self._ends[0])
            smp.set("sigma_max", self._ends[1])
        return smp

    def _close_sampler(self):
        for h in (self._sampler, getattr(self, "_model", None), self._schedule):
            if h is not None:
                h.close()
        self._sampler = self._schedule = None

    def scale_model_input(self, sample, timestep=None):
        """The model's input: the sample itself (see the module docstring)."""
        return sample

    def init_noise(self, batch, shape, seed=None):
        """Standard normal x_T of batch samples of the given shape, from the
        generator (row b is sample index b), as the library's run() draws it."""
        seed = self._seed if seed is None else seed
        dim = 1
        for d in shape:
            dim *= int(d)
        rows = [normal_fill(seed, b, RNG_STEP_INITIAL, dim) for b in range(batch)]
        np = _numpy()
        if np is None:
            return [list(r) for r in rows]
        return np.stack([np.asarray(r, dtype=np.float32) for r in rows]).reshape(
            (batch,) + tuple(shape))

    def step(self, model_output, timestep, sample, noise=None, uncond_output=None):
        """One step: returns SchedulerOutput(prev_sample, pred_original_sample).
        timestep must be the next entry of self.timesteps."""
        if self._sampler is None:
            raise RuntimeError("call set_timesteps() first")
        k = self._k
        if k >= len(self.timesteps):
            raise ValueError("the trajectory is finished: call set_timesteps() again")
        t = float(timestep.item() if hasattr(timestep, "item") else timestep)
        if not isinstance(timestep, numbers.Number) and not hasattr(timestep, "item"):
            raise TypeError("timestep must be a number")
        if abs(t - float(self.timesteps[k])) > 1e-3 * max(1.0, abs(t)):
            raise ValueError(f"timestep {t} is not the next one, timesteps[{k}] = "
                             f"{float(self.timesteps[k])}")
        torch = _torch_of(sample)
        if torch is not None:
            shape = tuple(sample.shape)
            conv = lambda a: None if a is None else a.detach().to("cpu").contiguous().numpy()  # noqa: E731
            sample_a, out_a = conv(sample), conv(model_output)
            unc_a, noise_a = conv(uncond_output), conv(noise)
        else:
            sample_a, out_a, unc_a, noise_a = sample, model_output, uncond_output, noise
            shape = None
        batch = len(sample_a)
        _np = _numpy()
        if _np is not None:
            sample_a = _np.ascontiguousarray(sample_a, dtype=_np.float32)
            dim = sample_a.size // batch
        else:
            dim = len(sample_a[0])
        if self._dim != dim or (self._batch or 0) < batch:
            self._sampler.close()
            self._model.close()
            self._dim, self._batch = dim, batch
            self._model = Model.external(dim, self._pred, self._var)
            for key, v in self._model_params.items():
                self._model.set(key, v)
            self._sampler = self._make(self._model)
        flat = (lambda a: None if a is None else _np.asarray(a, dtype=_np.float32).reshape(
            batch, -1)) if _np is not None else (lambda a: a)
        x_next, x0 = self._sampler.step_output(k, flat(sample_a), flat(out_a), flat(unc_a),
                                               flat(noise_a), seed=self._seed)
        self._k = k + 1
        if _np is not None:
            x_next = x_next.reshape(_np.shape(sample_a))
            x0 = x0.reshape(_np.shape(sample_a))
        if torch is not None:
            x_next = torch.from_numpy(x_next).reshape(shape)
            x0 = torch.from_numpy(x0).reshape(shape)
        return SchedulerOutput(x_next, x0)

    def close(self):
        self._close_sampler()
        if getattr(self, "_model", None) is not None:
            self._model.close()
        self._base.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
