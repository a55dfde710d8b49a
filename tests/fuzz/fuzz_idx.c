/*
 * Fuzz target for the examples' IDX reader (examples/idx.c), the parser the
 * digits example runs on outside files.
 *
 * Whatever the bytes, idx_parse() must either succeed with a well-formed
 * array (1 to IDX_MAX_DIMS dimensions whose product is the data size, the
 * data equal to the bytes after the header) or fail with a message and an
 * empty array.  A broken invariant aborts (which libFuzzer and the replay
 * test report).
 */
#include "../../examples/idx.c"

int fuzz_idx_one(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int fuzz_idx_one(const uint8_t *data, size_t size)
{
    idx_array a;
    char err[256];
    size_t i, prod = 1, header;
    err[0] = '\0';
    if (idx_parse(data, size, &a, err, sizeof err) != 0) {
        if (err[0] == '\0' || a.data != NULL || a.count != 0 || a.ndims != 0)
            abort();
        return 0;
    }
    if (a.ndims < 1 || a.ndims > IDX_MAX_DIMS || a.data == NULL)
        abort();
    for (i = 0; i < a.ndims; i++)
        prod *= a.dims[i];
    header = 4 + 4 * a.ndims;
    if (prod != a.count || size != header + a.count ||
        (a.count > 0 && memcmp(a.data, data + header, a.count) != 0))
        abort();
    idx_free(&a);
    if (a.data != NULL)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_idx_one(data, size);
}
