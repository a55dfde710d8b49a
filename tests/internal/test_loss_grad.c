/* The gradients behind the hybrid and KL losses: the derivatives of the
 * Gaussian KL and of the discretized decoder NLL against central finite
 * differences in double, then the whole loss of a trainer step (MSE,
 * hybrid, KL; eps, x0 and v nets) against finite differences of the loss
 * through the net's parameters. */
#include "diffuse.h"
#include "harness.h"
#include "internal.h"
#include "nn/net.h"

#include <stdlib.h>

/* d KL / d mean2 and d KL / d logvar2: |analytic - fd| <= 1e-7 (1 + |fd|),
 * central differences with h = 1e-6 (error ~1e-10). */
static void test_normal_kl_grad_finite_differences(void)
{
    const double cases[][4] = {{0.3, -2.0, -0.1, -1.5}, {1.0, 0.5, 1.0, 0.5},
                               {-2.0, -8.0, 0.7, -6.0}, {0.0, 1.0, 3.0, -0.2}};
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const double *c = cases[k], h = 1e-6;
        double dm, dl, fm, fl;
        diffuse__normal_kl_grad(c[0], c[1], c[2], c[3], &dm, &dl);
        fm = (diffuse__normal_kl(c[0], c[1], c[2] + h, c[3]) -
              diffuse__normal_kl(c[0], c[1], c[2] - h, c[3])) / (2 * h);
        fl = (diffuse__normal_kl(c[0], c[1], c[2], c[3] + h) -
              diffuse__normal_kl(c[0], c[1], c[2], c[3] - h)) / (2 * h);
        ASSERT_NEAR(dm, fm, 1e-7 * (1 + fabs(fm)));
        ASSERT_NEAR(dl, fl, 1e-7 * (1 + fabs(fl)));
    }
}

/* d(-log P)/d mean and d(-log P)/d log_scale of the discretized Gaussian, in
 * both CDF modes, for interior and edge bins, narrow and wide scales. */
static void test_discretized_nll_grad_finite_differences(void)
{
    const double xs[] = {-1.0, -0.5 + 1.0 / 255.0, 0.0 + 1.0 / 127.5, 0.7, 1.0};
    const double means[] = {-0.9, -0.2, 0.05, 0.8};
    const double scales[] = {-4.0, -2.0, -0.5, 0.3};
    int mode;
    size_t a, b, c;
    for (mode = 0; mode < 2; mode++)
        for (a = 0; a < 5; a++)
            for (b = 0; b < 4; b++)
                for (c = 0; c < 4; c++) {
                    double x = xs[a], m = means[b], ls = scales[c], h = 1e-6, dm, dls, fm, fl;
                    double d0, d1;
                    double nll = diffuse__discretized_nll_grad(x, m, ls, mode, &dm, &dls);
                    if (nll >= -log(1e-12) - 1e-9)
                        continue; /* floored: no gradient by design */
                    fm = (diffuse__discretized_nll_grad(x, m + h, ls, mode, &d0, &d1) -
                          diffuse__discretized_nll_grad(x, m - h, ls, mode, &d0, &d1)) / (2 * h);
                    fl = (diffuse__discretized_nll_grad(x, m, ls + h, mode, &d0, &d1) -
                          diffuse__discretized_nll_grad(x, m, ls - h, mode, &d0, &d1)) / (2 * h);
                    if (!(fabs(dm - fm) <= 1e-6 * (1 + fabs(fm))) ||
                        !(fabs(dls - fl) <= 1e-6 * (1 + fabs(fl))))
                        printf("  mode %d x %g mean %g log_scale %g: %g vs %g, %g vs %g\n", mode,
                               x, m, ls, dm, fm, dls, fl);
                    ASSERT_NEAR(dm, fm, 1e-6 * (1 + fabs(fm)));
                    ASSERT_NEAR(dls, fl, 1e-6 * (1 + fabs(fl)));
                }
}

/* The loss of step 0 of a fresh trainer (same t and noise every time) with
 * the net's weights P. */
static double loss_at(diffuse_net *net, const diffuse_schedule *s, int loss_kind,
                      const float *x0, size_t B)
{
    diffuse_trainer *tr = NULL;
    double loss = NAN;
    if (diffuse_trainer_create(&tr, net, s, B) != DIFFUSE_OK ||
        diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 0.0) != DIFFUSE_OK ||
        diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, loss_kind) != DIFFUSE_OK ||
        diffuse_trainer_step(tr, x0, B, 5, &loss) != DIFFUSE_OK)
        loss = NAN;
    diffuse_trainer_free(tr);
    return loss;
}

/* The gradient a trainer step computes (net->grads, lr 0 so the weights
 * stay) against central differences of the loss in float through the whole
 * pipeline: h = 1e-2 on the largest-gradient parameters, where float
 * rounding (~1e-7 of the loss) is far below the change; tolerance 2% of
 * the gradient. */
static void test_trainer_loss_gradients(void)
{
    static const int kinds[3][3] = {
        {DIFFUSE_LOSS_MSE, DIFFUSE_PRED_V, DIFFUSE_VAR_FIXED_SMALL},
        {DIFFUSE_LOSS_HYBRID, DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE},
        {DIFFUSE_LOSS_KL, DIFFUSE_PRED_X0, DIFFUSE_VAR_LEARNED}};
    diffuse_schedule *s = NULL;
    float x0[16 * 2];
    size_t i, k;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 20, 1e-3, 0.01));
    for (i = 0; i < 16 * 2; i++) /* data on the 8-bit grid for the decoder */
        x0[i] = (float)((double)((i * 53) % 256) / 127.5 - 1.0);
    for (k = 0; k < 3; k++) {
        diffuse_net *net = NULL;
        float *P, *G;
        size_t n, j, checked = 0;
        double base;
        ASSERT_OK(diffuse_net_create_mlp(&net, 2, 16, 1, 8, kinds[k][1], kinds[k][2], 16, 3));
        n = diffuse_net_param_count(net);
        P = (float *)malloc(n * sizeof(float));
        G = (float *)malloc(n * sizeof(float));
        ASSERT_TRUE(P && G);
        ASSERT_OK(diffuse_net_get_params(net, DIFFUSE_NET_WEIGHTS, P, n));
        base = loss_at(net, s, kinds[k][0], x0, 16);
        ASSERT_TRUE(isfinite(base));
        memcpy(G, net->grads, n * sizeof(float));
        /* the 12 largest gradient components */
        while (checked < 12) {
            size_t best = 0;
            double lp, lm, fd, h = 1e-2;
            for (j = 1; j < n; j++)
                if (fabsf(G[j]) > fabsf(G[best]))
                    best = j;
            if (G[best] == 0.0f)
                break;
            P[best] += (float)h;
            ASSERT_OK(diffuse_net_set_params(net, DIFFUSE_NET_WEIGHTS, P, n));
            lp = loss_at(net, s, kinds[k][0], x0, 16);
            P[best] -= (float)(2 * h);
            ASSERT_OK(diffuse_net_set_params(net, DIFFUSE_NET_WEIGHTS, P, n));
            lm = loss_at(net, s, kinds[k][0], x0, 16);
            P[best] += (float)h;
            ASSERT_OK(diffuse_net_set_params(net, DIFFUSE_NET_WEIGHTS, P, n));
            fd = (lp - lm) / (2 * h);
            if (!(fabs(fd - G[best]) <= 0.02 * fabs(G[best])))
                printf("  loss %d param %zu: analytic %.6g, finite difference %.6g\n",
                       kinds[k][0], best, (double)G[best], fd);
            ASSERT_NEAR(fd, G[best], 0.02 * fabs(G[best]));
            G[best] = 0.0f;
            checked++;
        }
        ASSERT_TRUE(checked == 12);
        free(P);
        free(G);
        diffuse_net_free(net);
    }
    diffuse_schedule_free(s);
}

int main(void)
{
    RUN(test_normal_kl_grad_finite_differences);
    RUN(test_discretized_nll_grad_finite_differences);
    RUN(test_trainer_loss_gradients);
    return harness_finish();
}
