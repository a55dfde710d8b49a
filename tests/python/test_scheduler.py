#!/usr/bin/env python3
"""The diffusers-style scheduler (python/libdiffuse/scheduler.py).

    LIBDIFFUSE_PATH=out/libdiffuse.so.1 /usr/bin/python3 tests/python/test_scheduler.py

Truths: diffusers' published formulas written out here in numpy float64
(timestep lists of each spacing, the DDIM step with set_alpha_to_one=False
and use_clipped_model_output=False), the library's own run() for the
caller-driven loop, and the config keys of diffusers' schedulers.  numpy is
needed (skips otherwise); torch is optional (the tensor path skips without
it).
"""
import math
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")
if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)

try:
    import libdiffuse as ld
    from libdiffuse.scheduler import Scheduler
except ImportError as _e:
    print("FAIL import_libdiffuse")
    print(f"    {_e}")
    print("0 passed, 1 failed, 0 skipped")
    sys.exit(1)

try:
    import numpy as np
except ImportError:
    np = None
try:
    import torch
except ImportError:
    torch = None

needs_numpy = unittest.skipUnless(np is not None and ld._np is not None, "numpy not available")

# Stable Diffusion v1's scheduler_config.json (DDIM, PNDM-era keys).
SD_DDIM = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.21.0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
    "timestep_spacing": "leading", "thresholding": False, "rescale_betas_zero_snr": False,
}


def scaled_linear_abar(T=1000, b0=0.00085, b1=0.012):
    betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def sigma_to_t(lsig, v):
    """diffusers' _sigma_to_t: the time of level v, interpolated linearly in
    log sigma between the training chain's levels (lsig = their logs)."""
    d = np.log(v) - lsig
    lo = np.clip(np.cumsum(d >= 0).argmax(), 0, len(lsig) - 2) if (d >= 0).any() else 0
    w = np.clip((lsig[lo] - np.log(v)) / (lsig[lo] - lsig[lo + 1]), 0, 1)
    return (1 - w) * lo + w * (lo + 1)


def karras_levels(lo, hi, n):
    """Karras et al.'s n levels from hi down to lo (rho 7)."""
    r = np.linspace(0, 1, n)
    return (hi ** (1 / 7) + r * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7


def eps_model(x, t):
    """Any smooth deterministic network will do."""
    return (0.3 * np.tanh(x) + 1e-4 * t).astype(np.float32)


class SchedulerTest(unittest.TestCase):
    """Scheduler.from_config and step() against diffusers' formulas."""

    @needs_numpy
    def test_sd_ddim_matches_diffusers_formulas(self):
        with Scheduler.from_config(SD_DDIM) as s:
            s.set_timesteps(20)
            # leading: arange(N) * (T // N) + steps_offset, descending
            want = (np.arange(20) * (1000 // 20) + 1)[::-1]
            self.assertEqual([float(v) for v in s.timesteps], [float(v) for v in want])
            abar = scaled_linear_abar()
            rng = np.random.default_rng(1)
            x = rng.standard_normal((3, 4)).astype(np.float32)
            ref = x.astype(np.float64)
            ts = list(want)
            for i, t in enumerate(ts):
                out = eps_model(x, t)
                x, x0 = s.step(out, t, x)
                # diffusers DDIMScheduler.step, eta 0: previous step from the
                # list itself (here t - T // N anyway), final abar = abar[0]
                a_t = abar[t]
                a_p = abar[ts[i + 1]] if i + 1 < len(ts) else abar[0]
                e = eps_model(ref.astype(np.float32), t).astype(np.float64)
                x0_ref = (ref - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
                ref = math.sqrt(a_p) * x0_ref + math.sqrt(1 - a_p) * e
                np.testing.assert_allclose(x0, x0_ref, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-4)

    def test_unknown_and_unsupported_keys_name_the_key(self):
        for cfg, key in ((dict(SD_DDIM, frobnicate=1), "frobnicate"),
                         (dict(SD_DDIM, beta_schedule="sigmoid"), "beta_schedule"),
                         (dict(SD_DDIM, prediction_type="flow"), "prediction_type"),
                         (dict(SD_DDIM, timestep_spacing="karras"), "timestep_spacing"),
                         ({"_class_name": "DPMSolverMultistepScheduler",
                           "algorithm_type": "dpmsolver"}, "algorithm_type"),
                         ({"_class_name": "UniPCMultistepScheduler",
                           "solver_type": "bh1"}, "solver_type"),
                         ({"_class_name": "UniPCMultistepScheduler",
                           "lambda_min_clipped": -5.1}, "lambda_min_clipped"),
                         ({"_class_name": "DDIMScheduler",
                           "use_karras_sigmas": True}, "use_karras_sigmas"),
                         ({"_class_name": "LCMScheduler"}, "_class_name")):
            with self.assertRaises(ValueError) as cm:
                Scheduler.from_config(cfg)
            self.assertIn(key, str(cm.exception))

    def test_spacings(self):
        # diffusers' set_timesteps formulas (NUMERICS section 4)
        for spacing, want in (("trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
                              ("linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])):
            cfg = {"_class_name": "DDPMScheduler", "timestep_spacing": spacing}
            with Scheduler.from_config(cfg) as s:
                s.set_timesteps(10)
                self.assertEqual([float(v) for v in s.timesteps], [float(v) for v in want])

    @needs_numpy
    def test_step_loop_equals_run(self):
        for cls, extra in (("DPMSolverMultistepScheduler", {"solver_order": 3}),
                           ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
                           ("EulerAncestralDiscreteScheduler", {}),
                           ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
                           ("DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}),
                           ("UniPCMultistepScheduler", {}),
                           ("HeunDiscreteScheduler", {"timestep_spacing": "trailing"})):
            cfg = dict({"_class_name": cls, "beta_schedule": "scaled_linear",
                        "beta_start": 0.00085, "beta_end": 0.012}, **extra)
            with Scheduler.from_config(cfg, seed=7) as s:
                s.set_timesteps(8)
                x = s.init_noise(2, (3,))
                for t in s.timesteps:
                    x, x0 = s.step(eps_model(s.scale_model_input(x, t), float(t)), t, x)
                # the same trajectory by the library's callback run
                smp = s._sampler
                with ld.Model(lambda xx, tt: eps_model(xx, float(tt[0])), 3,
                              float_timesteps=True) as m, \
                        ld.Sampler(s._schedule or s._base, m, s.kind, 2) as ref_s:
                    for k, v in s._sampler_params.items():
                        ref_s.set(k, v)
                    if smp.get("sigma_grid"):
                        ref_s.set("sigma_grid", smp.get("sigma_grid"))
                        ref_s.set("grid_steps", smp.get("grid_steps"))
                        ref_s.set("sigma_min", smp.get("sigma_min"))
                        ref_s.set("sigma_max", smp.get("sigma_max"))
                    ref = ref_s.run(seed=7, batch=2)
                self.assertTrue(np.array_equal(np.asarray(x), np.asarray(ref)), cls)

    @needs_numpy
    def test_dpmpp_3m_step_is_diffusers(self):
        """DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True,
        lower_order_final=False): each step before the last is diffusers'
        dpmsolver++ update of its order (1, 2, then 3: the third-order one
        weights D2 by alpha (1/2 - (e^{-h} - 1 + h) / h^2)), written out here
        in float64 from the scheduler's own previous sample; with
        third_order_taylor=True the third-order steps weight D2 by alpha (1 -
        2 (e^{-h} - 1 + h) / h^2) instead, which on this grid moves them far
        beyond the tolerance."""
        abar = scaled_linear_abar()
        sig = np.sqrt((1 - abar) / abar)
        n = 8
        r = np.linspace(0, 1, n)
        lv = (sig[-1] ** (1 / 7) + r * (sig[0] ** (1 / 7) - sig[-1] ** (1 / 7))) ** 7
        al = 1 / np.sqrt(1 + lv ** 2)
        lam = np.log(al) - np.log(lv * al)
        cfg = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "beta_end": 0.012, "solver_order": 3,
               "use_karras_sigmas": True, "lower_order_final": False}
        gaps = []
        for taylor in (False, True):
            with Scheduler.from_config(cfg, third_order_taylor=taylor) as s:
                s.set_timesteps(n)
                x = s.init_noise(2, (3,))
                D = []
                for k, t in enumerate(s.timesteps):
                    xd = np.asarray(x, dtype=np.float64)
                    eps = eps_model(x, float(t))
                    D.insert(0, (xd - lv[k] * al[k] * eps.astype(np.float64)) / al[k])
                    x, _ = s.step(eps, t, x)
                    if k == n - 1:
                        break
                    h = lam[k + 1] - lam[k]
                    em1 = math.expm1(-h)
                    ref = lv[k + 1] * al[k + 1] / (lv[k] * al[k]) * xd - al[k + 1] * em1 * D[0]
                    if k == 1:
                        r0 = (lam[k] - lam[k - 1]) / h
                        ref -= 0.5 * al[k + 1] * em1 * (D[0] - D[1]) / r0
                    elif k >= 2:
                        r0 = (lam[k] - lam[k - 1]) / h
                        r1 = (lam[k - 1] - lam[k - 2]) / h
                        d10, d11 = (D[0] - D[1]) / r0, (D[1] - D[2]) / r1
                        d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
                        d2 = (d10 - d11) / (r0 + r1)
                        ref += al[k + 1] * (em1 / h + 1) * d1
                        w_d = -al[k + 1] * ((em1 + h) / h ** 2 - 0.5)
                        w_t = al[k + 1] * (1 - 2 * (em1 + h) / h ** 2)
                        gaps.append(np.abs((w_t - w_d) * d2).max())
                        ref += (w_t if taylor else w_d) * d2
                    np.testing.assert_allclose(np.asarray(x, dtype=np.float64), ref,
                                               rtol=2e-6, atol=2e-6,
                                               err_msg=f"step {k}, taylor {taylor}")
        self.assertGreater(max(gaps), 1e-3)

    @needs_numpy
    def test_euler_sigma_min_max_as_diffusers(self):
        """EulerDiscreteScheduler's sigma_min / sigma_max config keys: the
        ends of its Karras (or exponential) grid in place of the sigmas of
        the spaced timesteps, either one alone too, as diffusers'
        _convert_to_karras; the times are diffusers' _sigma_to_t of the
        levels (written out here); without a grid they change nothing; other
        schedulers refuse a value (None is accepted, as configs write it)."""
        abar = scaled_linear_abar()
        sig = np.sqrt((1 - abar) / abar)
        lsig = np.log(sig)

        n = 10
        ts = np.arange(n) * (1000 // n) + 1  # leading, steps_offset 1
        base = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "leading",
                "steps_offset": 1}
        for karras in (True, False):
            for lo, hi in ((0.1, 10.0), (None, 5.0), (0.05, None), (None, None)):
                cfg = dict(base, sigma_min=lo, sigma_max=hi)
                if karras:
                    cfg["use_karras_sigmas"] = True
                else:
                    cfg["use_exponential_sigmas"] = True
                with Scheduler.from_config(cfg) as s:
                    s.set_timesteps(n)
                    a = sig[int(ts.min())] if lo is None else lo
                    b = sig[int(ts.max())] if hi is None else hi
                    if karras:
                        lv = karras_levels(a, b, n)
                    else:
                        lv = np.exp(np.linspace(math.log(b), math.log(a), n))
                    want = np.array([sigma_to_t(lsig, v) for v in lv])
                    got = np.asarray(s.timesteps, dtype=np.float64)
                    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3,
                                               err_msg=f"{lo} {hi} karras {karras}")
        with Scheduler.from_config(base) as s0, \
                Scheduler.from_config(dict(base, sigma_min=0.1, sigma_max=10.0)) as s1:
            s0.set_timesteps(n)
            s1.set_timesteps(n)
            self.assertEqual([float(v) for v in s0.timesteps], [float(v) for v in s1.timesteps])
        for cls in ("DPMSolverMultistepScheduler", "HeunDiscreteScheduler"):
            cfg = dict(base, _class_name=cls, sigma_min=None, sigma_max=None)
            Scheduler.from_config(cfg).close()
            cfg["sigma_min"] = 0.1
            with self.assertRaises(ValueError):
                Scheduler.from_config(cfg)
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with self.assertRaises(ValueError):
                Scheduler.from_config(dict(base, use_karras_sigmas=True, sigma_min=bad))

    @needs_numpy
    def test_grids_match_diffusers(self):
        """Karras grids as diffusers builds them, written out in numpy:
        Euler / Heun between the sigmas of their spaced timesteps (leading
        with steps_offset, trailing), DPM-Solver++ and UniPC over the whole
        chain with the model times rounded; times by _sigma_to_t."""
        abar = scaled_linear_abar()
        sig = np.sqrt((1 - abar) / abar)
        lsig = np.log(sig)


        n = 10
        base = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                "use_karras_sigmas": True}
        for cls, extra, ts in (
                ("EulerDiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1},
                 np.arange(n) * (1000 // n) + 1),
                ("HeunDiscreteScheduler", {"timestep_spacing": "trailing"},
                 np.arange(1000, 0, -1000 / n).round() - 1),
                ("DPMSolverMultistepScheduler", {}, None),
                ("UniPCMultistepScheduler", {}, None)):
            cfg = dict(base, _class_name=cls, **extra)
            with Scheduler.from_config(cfg) as s:
                s.set_timesteps(n)
                if ts is not None:
                    lv = karras_levels(sig[int(ts.min())], sig[int(ts.max())], n)
                    want = np.array([sigma_to_t(lsig, v) for v in lv])
                    got = np.asarray(s.timesteps, dtype=np.float64)
                    if cls.startswith("Heun"):
                        got = got[::2]  # first stages (the second ones repeat the next level)
                    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3, err_msg=cls)
                else:
                    lv = karras_levels(sig[0], sig[-1], n)
                    want = np.array([sigma_to_t(lsig, v) for v in lv]).round()
                    self.assertEqual([float(v) for v in s.timesteps], [float(v) for v in want],
                                     cls)

    @needs_numpy
    def test_lambda_min_clipped_as_diffusers(self):
        """diffusers' DPMSolverMultistep set_timesteps below the clip (cosine
        schedule, lambda_min_clipped = -5.1), written out in numpy for each
        spacing: last = T - #(lambda < clip), the grid rebuilt below it."""
        with ld.Schedule.cosine(1000) as c:
            abar = np.asarray(c.table("alphas_cumprod"), dtype=np.float64)
        lam = 0.5 * (np.log(abar) - np.log1p(-abar))
        clipped = int(np.searchsorted(lam[::-1], -5.1))
        self.assertGreater(clipped, 0)
        last = 1000 - clipped
        n = 12
        for spacing, want in (
                ("linspace", np.linspace(0, last - 1, n + 1).round()[::-1][:-1]),
                ("leading", (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1]),
                ("trailing", np.arange(last, 0, -1000 / n).round() - 1)):
            cfg = {"_class_name": "DPMSolverMultistepScheduler",
                   "beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1,
                   "timestep_spacing": spacing}
            with Scheduler.from_config(cfg) as s:
                s.set_timesteps(n)
                self.assertEqual([float(v) for v in s.timesteps],
                                 [float(v) for v in sorted(set(want.tolist()), reverse=True)],
                                 spacing)
        # off (the default): the whole chain
        with Scheduler.from_config({"_class_name": "DPMSolverMultistepScheduler",
                                    "beta_schedule": "squaredcos_cap_v2",
                                    "timestep_spacing": "trailing"}) as s:
            s.set_timesteps(n)
            self.assertEqual(float(s.timesteps[0]), 999.0)

    def test_new_kinds_from_config(self):
        with Scheduler.from_config({"_class_name": "DPMSolverMultistepScheduler",
                                    "algorithm_type": "sde-dpmsolver++"}) as s:
            self.assertEqual(s.kind, "dpmpp_2m_sde")
        with Scheduler.from_config({"_class_name": "UniPCMultistepScheduler",
                                    "solver_type": "bh2", "predict_x0": True,
                                    "disable_corrector": []}) as s:
            self.assertEqual(s.kind, "unipc")
        with self.assertRaises(ValueError) as cm:
            Scheduler.from_config({"_class_name": "UniPCMultistepScheduler",
                                   "predict_x0": False})
        self.assertIn("predict_x0", str(cm.exception))

    def test_out_of_order_timestep_refused(self):
        with Scheduler.from_config(SD_DDIM) as s:
            s.set_timesteps(5)
            with self.assertRaises(ValueError):
                s.step([[0.0, 0.0]], 3, [[0.0, 0.0]])

    @unittest.skipUnless(torch is not None and np is not None and ld._np is not None,
                         "torch or numpy not available")
    def test_torch_tensors_in_and_out(self):
        with Scheduler.from_config({"_class_name": "EulerDiscreteScheduler"}) as s:
            s.set_timesteps(4)
            x = torch.from_numpy(s.init_noise(2, (2, 2)))
            for t in s.timesteps:
                out = torch.tanh(x) * 0.1
                x, x0 = s.step(out, torch.tensor(float(t)), x)
            self.assertIsInstance(x, torch.Tensor)
            self.assertEqual(tuple(x.shape), (2, 2, 2))
            self.assertTrue(bool(torch.isfinite(x).all()))


class ExampleTest(unittest.TestCase):

    @unittest.skipUnless(torch is not None and np is not None and ld._np is not None,
                         "torch or numpy not available")
    def test_example_torch_runs_and_agrees(self):
        import subprocess
        env = dict(os.environ)
        env.setdefault("LIBDIFFUSE_PATH", ld._path)
        for args in ([], ["--scheduler", "HeunDiscreteScheduler", "--karras"]):
            r = subprocess.run([sys.executable, os.path.join(PYDIR, "example_torch.py"), *args],
                               env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertTrue(r.stdout.strip().endswith("ok"), r.stdout)
        r = subprocess.run([sys.executable, os.path.join(PYDIR, "example_torch.py"), "--help"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--scheduler", r.stdout)


class _Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.n_pass = self.n_fail = self.n_skip = 0

    def addSuccess(self, test):
        self.n_pass += 1
        print(f"ok   {test.id().split('.')[-1]}")

    def addFailure(self, test, err):
        self.n_fail += 1
        print(f"FAIL {test.id().split('.')[-1]}\n{self._exc_info_to_string(err, test)}")

    addError = addFailure

    def addSkip(self, test, reason):
        self.n_skip += 1
        print(f"skip {test.id().split('.')[-1]}: {reason}")


if __name__ == "__main__":
    result = _Result()
    unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__]).run(result)
    print(f"{result.n_pass} passed, {result.n_fail} failed, {result.n_skip} skipped")
    sys.exit(1 if result.n_fail else 0)
