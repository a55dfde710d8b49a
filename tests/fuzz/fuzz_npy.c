/*
 * Fuzz target for the diffuse program's .npy reader (cli/npy.c), the parser
 * `diffuse train`, `bpd` and `sample --labels` run on outside files.
 *
 * Whatever the bytes, npy_parse() must either succeed with a well-formed
 * array (a known element type, at most NPY_MAX_DIMS dimensions whose product
 * is the element count, the data equal to the file's last count x size
 * bytes) or fail with a message and an empty array.  A broken invariant
 * aborts (which libFuzzer and the replay test report).
 */
#include "../../cli/npy.c"

int fuzz_npy_one(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int fuzz_npy_one(const uint8_t *data, size_t size)
{
    npy_array a;
    char err[256];
    size_t i, prod = 1, bytes;
    err[0] = '\0';
    if (npy_parse(data, size, &a, err, sizeof err) != 0) {
        if (err[0] == '\0' || a.data != NULL || a.count != 0 || a.ndims != 0)
            abort();
        return -1;
    }
    if (a.type < NPY_F32 || a.type > NPY_I64 || a.ndims > NPY_MAX_DIMS || a.data == NULL)
        abort();
    for (i = 0; i < a.ndims; i++)
        prod *= a.dims[i];
    bytes = a.count * a.elem_size;
    if (prod != a.count || bytes > size ||
        (bytes > 0 && memcmp(a.data, data + size - bytes, bytes) != 0))
        abort();
    for (i = 0; i < a.count && i < 4; i++)
        (void)npy_get(&a, i);
    npy_free(&a);
    if (a.data != NULL)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_npy_one(data, size);
    return 0;
}
