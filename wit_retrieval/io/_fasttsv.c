/* Splitting a segment of whole TSV rows into the Arrow buffers of a few string columns.
 *
 * pyarrow.csv tokenizes every column and converts each one read; a WIT row is mostly its two
 * long context columns, which the MMIR build never reads. Here each field is found with
 * memchr (the long ones are skipped, not copied) and only the wanted columns are copied out.
 * The rules are pyarrow's for the options io/tsv.py gives it: tab-separated, '"' quotes a
 * field that may hold tabs and newlines, "" inside quotes is one quote, an empty field (quoted
 * or not) is null, empty lines are skipped. Anything else -- a '\r', a row with another number
 * of fields, text after a closing quote, a quote left open -- returns None, and the caller
 * hands the segment to pyarrow (then to the row-by-row reader), which decides and reports.
 * UTF-8 is checked by the caller (Arrow's validation), not here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *p, size_t n) {
    if (buf_grow(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

typedef struct {
    Buf data, offsets, validity;
    int64_t nulls;
} Column;

enum { OK = 0, NOT_MINE = 1, NO_MEMORY = 2 };

/* One field from *pp: its content appended to `col` (NULL: skipped). Sets *pp past the field. */
static int field(const char **pp, const char *end, Column *col, int last) {
    const char *p = *pp;
    size_t start = col ? col->data.len : 0;
    if (p < end && *p == '"') {
        p++;
        for (;;) {
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q) return NOT_MINE;  /* a quote left open */
            if (col && buf_put(&col->data, p, (size_t)(q - p))) return NO_MEMORY;
            p = q + 1;
            if (p < end && *p == '"') {  /* "" is one quote */
                if (col && buf_put(&col->data, "\"", 1)) return NO_MEMORY;
                p++;
                continue;
            }
            break;
        }
        if (p < end ? *p != (last ? '\n' : '\t') : !last) return NOT_MINE;  /* text after the quote, or too few fields */
    } else {
        const char *q = memchr(p, last ? '\n' : '\t', (size_t)(end - p));
        if (!q) {
            if (!last) return NOT_MINE;  /* too few fields */
            q = end;
        }
        size_t n = (size_t)(q - p);
        /* a newline before the tab ends the row early; a tab in the last field is one field too
           many; '\r' ends lines in pyarrow: all for pyarrow to decide */
        if (memchr(p, last ? '\t' : '\n', n) || memchr(p, '\r', n)) return NOT_MINE;
        if (col && buf_put(&col->data, p, n)) return NO_MEMORY;
        p = q;
    }
    if (col) {
        int32_t offset = (int32_t)col->data.len;
        if (col->data.len > INT32_MAX) return NOT_MINE;
        if (buf_put(&col->offsets, &offset, sizeof offset)) return NO_MEMORY;
        col->nulls += col->data.len == start;
    }
    *pp = p < end ? p + 1 : p;  /* past the tab or the newline */
    return OK;
}

static void set_validity(Column *col, int64_t rows) {
    /* bit i: row i is not null (its offsets differ) */
    const int32_t *off = (const int32_t *)col->offsets.data;
    memset(col->validity.data, 0, (size_t)((rows + 7) / 8));
    for (int64_t i = 0; i < rows; i++)
        if (off[i + 1] != off[i]) col->validity.data[i >> 3] |= (char)(1 << (i & 7));
}

static int split_rows(const char *p, const char *end, int ncols, const int *want, Column *cols, int64_t *rows) {
    while (p < end) {
        if (*p == '\n') {  /* an empty line */
            p++;
            continue;
        }
        for (int c = 0; c < ncols; c++) {
            int status = field(&p, end, want[c] >= 0 ? &cols[want[c]] : NULL, c == ncols - 1);
            if (status != OK) return status;
        }
        (*rows)++;
    }
    return OK;
}

static PyObject *column_tuple(Column *col, int64_t rows) {
    if (buf_grow(&col->validity, (size_t)((rows + 7) / 8) + 1)) return PyErr_NoMemory();
    set_validity(col, rows);
    return Py_BuildValue("(y#y#y#L)", col->offsets.data, (Py_ssize_t)col->offsets.len,
                         col->data.data ? col->data.data : "", (Py_ssize_t)col->data.len,
                         col->validity.data, (Py_ssize_t)((rows + 7) / 8), (long long)col->nulls);
}

/* split(data, ncols, wanted) -> (rows, [(offsets, data, validity, null_count) per wanted column]) or None */
static PyObject *split(PyObject *self, PyObject *args) {
    Py_buffer view;
    int ncols;
    PyObject *wanted;
    if (!PyArg_ParseTuple(args, "y*iO", &view, &ncols, &wanted)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t nwant = PySequence_Size(wanted);
    int *want = malloc(sizeof(int) * (size_t)(ncols > 0 ? ncols : 1));
    Column *cols = calloc((size_t)(nwant > 0 ? nwant : 1), sizeof(Column));
    if (!want || !cols || nwant < 0 || ncols < 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "split: bad arguments");
        goto out;
    }
    for (int c = 0; c < ncols; c++) want[c] = -1;
    for (Py_ssize_t k = 0; k < nwant; k++) {
        PyObject *item = PySequence_GetItem(wanted, k);
        long index = item ? PyLong_AsLong(item) : -1;
        Py_XDECREF(item);
        if (index < 0 || index >= ncols) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "split: column index out of range");
            goto out;
        }
        want[index] = (int)k;
        int32_t zero = 0;
        if (buf_put(&cols[k].offsets, &zero, sizeof zero)) {
            PyErr_NoMemory();
            goto out;
        }
    }
    int64_t rows = 0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = split_rows(view.buf, (const char *)view.buf + view.len, ncols, want, cols, &rows);
    Py_END_ALLOW_THREADS
    if (status == NO_MEMORY) {
        PyErr_NoMemory();
        goto out;
    }
    if (status == NOT_MINE) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    PyObject *columns = PyList_New(nwant);
    if (!columns) goto out;
    for (Py_ssize_t k = 0; k < nwant; k++) {
        PyObject *column = column_tuple(&cols[k], rows);
        if (!column) {
            Py_DECREF(columns);
            goto out;
        }
        PyList_SET_ITEM(columns, k, column);
    }
    result = Py_BuildValue("(LN)", (long long)rows, columns);
out:
    for (Py_ssize_t k = 0; cols && k < nwant; k++) {
        free(cols[k].data.data);
        free(cols[k].offsets.data);
        free(cols[k].validity.data);
    }
    free(cols);
    free(want);
    PyBuffer_Release(&view);
    return result;
}

/* newlines(data) -> how many '\n' bytes it holds (memchr steps: several times bytes.count's speed) */
static PyObject *newlines(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    const char *p = view.buf, *end = p + view.len;
    long long count = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        count++;
        p++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(count);
}

static PyMethodDef methods[] = {
    {"newlines", newlines, METH_VARARGS, "newlines(data) -> the number of newline bytes in data"},
    {"split", split, METH_VARARGS,
     "split(data, ncols, wanted) -> (rows, [(offsets, data, validity, null_count)]) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fasttsv", "TSV segments to Arrow string buffers.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__fasttsv(void) { return PyModule_Create(&module); }
