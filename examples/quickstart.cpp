// quickstart.cpp: libdiffuse from C++.
//
// The same first steps as quickstart.c (a schedule, q(x_t | x_0), the
// posterior, DDIM over a toy model), with the C handles held by
// std::unique_ptr and a lambda-free C callback.  Build against an installed
// copy with:
//   c++ -std=c++11 quickstart.cpp $(pkg-config --cflags --libs libdiffuse) -o quickstart_cpp
#include <diffuse.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Turns a libdiffuse status into an exception carrying the library's message.
void check(int status, const char *what)
{
    if (status != DIFFUSE_OK)
        throw std::runtime_error(std::string(what) + ": " + diffuse_strerror(status) + " (" +
                                 diffuse_last_error() + ")");
}

struct ScheduleFree {
    void operator()(diffuse_schedule *s) const { diffuse_schedule_free(s); }
};
struct ModelFree {
    void operator()(diffuse_model *m) const { diffuse_model_free(m); }
};
struct SamplerFree {
    void operator()(diffuse_sampler *s) const { diffuse_sampler_free(s); }
};
using Schedule = std::unique_ptr<diffuse_schedule, ScheduleFree>;
using Model = std::unique_ptr<diffuse_model, ModelFree>;
using Sampler = std::unique_ptr<diffuse_sampler, SamplerFree>;

// The exact eps-predictor for data N(mu, 1) in every dimension: with
// x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, E[eps | x_t] =
// sqrt(1 - abar) (x_t - sqrt(abar) mu).
struct Oracle {
    std::vector<double> abar; // of the original 1000-step chain
    double mu;
};

extern "C" int oracle_eps(void *user, const float *x_t, const int32_t *t, size_t batch,
                          size_t dim, float *out)
{
    const Oracle *o = static_cast<const Oracle *>(user);
    for (size_t b = 0; b < batch; b++) {
        double a = o->abar[static_cast<size_t>(t[b])];
        for (size_t i = 0; i < dim; i++)
            out[b * dim + i] = static_cast<float>(
                std::sqrt(1.0 - a) * (x_t[b * dim + i] - std::sqrt(a) * o->mu));
    }
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        std::printf("usage: quickstart_cpp\n"
                    "Samples N(0.5, 1) data with DDIM on 50 respaced steps, using the exact\n"
                    "noise predictor as the model, and prints the sample mean and variance.\n");
        return 0;
    }
    try {
        const size_t T = 1000, dim = 4, batch = 512;
        diffuse_schedule *raw = nullptr;
        check(diffuse_schedule_create_cosine(&raw, T, 0.008, 0.999), "schedule");
        Schedule sched(raw);

        Oracle oracle{std::vector<double>(T), 0.5};
        check(diffuse_schedule_table(sched.get(), DIFFUSE_TABLE_ALPHAS_CUMPROD,
                                     oracle.abar.data(), T),
              "table");

        std::vector<int32_t> keep(T);
        size_t n = 0;
        check(diffuse_timesteps_from_spec(T, "ddim50", keep.data(), keep.size(), &n), "spec");
        check(diffuse_schedule_respace(&raw, sched.get(), keep.data(), n), "respace");
        Schedule fast(raw);

        diffuse_model *m = nullptr;
        check(diffuse_model_create(&m, oracle_eps, &oracle, dim, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL),
              "model");
        Model model(m);
        diffuse_sampler *s = nullptr;
        check(diffuse_sampler_create(&s, fast.get(), model.get(), DIFFUSE_SAMPLER_DDIM, batch),
              "sampler");
        Sampler sampler(s);

        std::vector<float> x(batch * dim);
        check(diffuse_sampler_run(sampler.get(), nullptr, 7, 0, batch, x.data()), "run");
        double mean = 0, var = 0;
        for (float v : x)
            mean += v;
        mean /= static_cast<double>(x.size());
        for (float v : x)
            var += (v - mean) * (v - mean);
        var /= static_cast<double>(x.size() - 1);
        std::printf("libdiffuse %s from C++: DDIM, %zu steps, %zu samples of N(0.5, 1)\n",
                    diffuse_version_string(), n, batch);
        std::printf("sample mean %.3f (data 0.5), variance %.3f (data 1)\n", mean, var);
        // DDIM's deterministic 50-step chain keeps the mean and loses a
        // little variance; either far off means something is wrong.
        return std::fabs(mean - 0.5) < 0.1 && var > 0.7 && var < 1.2 ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "quickstart_cpp: %s\n", e.what());
        return 1;
    }
}
