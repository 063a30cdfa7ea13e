/* Splitting the lines of a TREC run (`qid Q0 docid rank score tag`) into Arrow buffers.
 *
 * pyarrow.csv reads a run at about half the speed of pandas' C reader: it tokenizes all six
 * fields with its quoting rules and converts each column. A run has no quoting and two of its
 * columns are never read, so one pass per line classifies each byte through a table, copies the
 * query id, the image id and the score's text into preallocated buffers (the caller's numpy
 * arrays) and parses the rank. The score's text is converted by Arrow afterwards (its cast is
 * correctly rounded, as Python's float() is), and UTF-8 is checked by Arrow's validation too.
 *
 * Only the strict form is taken here: exactly one `delim` byte between six non-empty fields, no
 * other whitespace, lines ended by '\n' or "\r\n", no empty line, a rank of [-]digits (at most
 * 18). Anything else returns None and the caller hands the file to pyarrow.csv, then to the
 * line-by-line reader, which decides and names the line. The GIL is released, so the caller
 * splits a file into pieces at line ends and runs them on threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { PLAIN = 0, DELIM = 1, BAD = 2, HIGH = 3 };

typedef struct {
    int32_t *off;
    char *data;
    int64_t cap_rows, cap_data, len;
} Out;

static int put(Out *o, int64_t row, const char *p, const char *q) {
    int64_t n = q - p;
    if (n == 0 || o->len + n > o->cap_data) return -1;
    memcpy(o->data + o->len, p, (size_t)n);
    o->len += n;
    if (o->len > INT32_MAX) return -1;
    o->off[row + 1] = (int32_t)o->len;
    return 0;
}

static int parse_rank(const char *p, const char *q, int64_t *value) {
    int negative = p < q && *p == '-';
    p += negative;
    if (p == q || q - p > 18) return -1;
    int64_t v = 0;
    for (; p < q; p++) {
        unsigned d = (unsigned char)*p - '0';
        if (d > 9) return -1;
        v = v * 10 + d;
    }
    *value = negative ? -v : v;
    return 0;
}

/* Every line of [p, end): 0, the row count and whether every byte was ASCII; -1 when a line is
   not in the strict form. */
static int split_lines(const char *p, const char *end, const unsigned char *cls, Out *qid, Out *doc, Out *score,
                       int64_t *rank, int64_t cap_rank, int64_t *rows, int *ascii) {
    int64_t row = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le > p && le[-1] == '\r') le--;
        const char *cut[5];
        int k = 0;
        for (const char *c = p; c < le; c++) {
            unsigned char kind = cls[(unsigned char)*c];
            if (kind == PLAIN) continue;
            if (kind == HIGH) {  /* not ASCII: the caller validates the UTF-8 */
                *ascii = 0;
                continue;
            }
            if (kind == BAD || k == 5) return -1;
            cut[k++] = c;
        }
        if (k != 5 || row >= cap_rank || row + 1 >= qid->cap_rows) return -1;
        /* fields: [p, cut0) Q0 (cut1, cut2) (cut2, cut3) (cut3, cut4) tag; none may be empty */
        if (cut[1] - cut[0] < 2 || cut[4] + 1 >= le) return -1;
        if (put(qid, row, p, cut[0]) || put(doc, row, cut[1] + 1, cut[2]) ||
            parse_rank(cut[2] + 1, cut[3], &rank[row]) || put(score, row, cut[3] + 1, cut[4]))
            return -1;
        row++;
        p = nl ? nl + 1 : end;
    }
    *rows = row;
    return 0;
}

/* split_run(data, delim, qid_offsets, qid_data, doc_offsets, doc_data, ranks, score_offsets, score_data)
   -> (rows, qid_bytes, doc_bytes, score_bytes, ascii) or None. Offsets are int32 arrays (first entry set
   to 0 here), ranks int64; all preallocated by the caller, each offsets array rows + 1 long. */
static PyObject *split_run(PyObject *self, PyObject *args) {
    Py_buffer in, b[7];
    int delim;
    if (!PyArg_ParseTuple(args, "y*iw*w*w*w*w*w*w*", &in, &delim, &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6]))
        return NULL;
    unsigned char cls[256] = {0};
    memset(cls + 0x80, HIGH, 0x80);
    cls['\t'] = cls[' '] = cls['\r'] = cls['\v'] = cls['\f'] = BAD;
    cls[(unsigned char)delim] = DELIM;
    /* capacities in items: rows + 1 offsets each, bytes of text, ranks */
    Py_ssize_t cap_rows = b[0].len / 4;
    if (b[2].len / 4 < cap_rows) cap_rows = b[2].len / 4;
    if (b[5].len / 4 < cap_rows) cap_rows = b[5].len / 4;
    Out qid = {b[0].buf, b[1].buf, cap_rows, b[1].len, 0}, doc = {b[2].buf, b[3].buf, cap_rows, b[3].len, 0},
        score = {b[5].buf, b[6].buf, cap_rows, b[6].len, 0};
    Py_ssize_t nrank = b[4].len / 8;
    int64_t rows = 0;
    int status = -1, ascii = 1;
    if (cap_rows > 0) {
        qid.off[0] = doc.off[0] = score.off[0] = 0;
        Py_BEGIN_ALLOW_THREADS
        status = split_lines(in.buf, (const char *)in.buf + in.len, cls, &qid, &doc, &score, b[4].buf, nrank, &rows,
                              &ascii);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in);
    for (int k = 0; k < 7; k++) PyBuffer_Release(&b[k]);
    if (status != 0) Py_RETURN_NONE;
    return Py_BuildValue("(LLLLO)", (long long)rows, (long long)qid.len, (long long)doc.len, (long long)score.len,
                         ascii ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"split_run", split_run, METH_VARARGS,
     "split_run(data, delim, qid_offsets, qid_data, doc_offsets, doc_data, ranks, score_offsets, score_data)"
     " -> (rows, qid_bytes, doc_bytes, score_bytes, ascii) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fasttrec", "TREC run lines to Arrow buffers.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__fasttrec(void) { return PyModule_Create(&module); }
