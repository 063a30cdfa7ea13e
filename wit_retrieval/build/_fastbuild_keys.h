/*
 * Column helpers of build/keys.py (part of _fastbuild.c, included there): over a whole Arrow
 * string column given as (int32 offsets, UTF-8 data) buffers, what keys.py otherwise does with
 * an RE2 pass or numpy arrays per character. keys.py keeps its own versions (tests run both).
 */

/* the column's (offsets, data) as checked pointers; -1 with an exception when inconsistent */
static Py_ssize_t column_view(Py_buffer *off, Py_buffer *data, const int32_t **o, const uint8_t **d) {
    if (off->len < 4 || off->len % 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
        return -1;
    }
    Py_ssize_t n = off->len / 4 - 1;
    *o = off->buf;
    *d = data->buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((*o)[i] < 0 || (*o)[i] > (*o)[i + 1] || (*o)[i + 1] > data->len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of order or past the data");
            return -1;
        }
    return n;
}

typedef PyObject *(*ColumnFn)(Py_ssize_t n, const int32_t *o, const uint8_t *d);

/* fn over the (offsets, data) buffers in args, checked first */
static PyObject *over_column(PyObject *args, ColumnFn fn) {
    Py_buffer off, data;
    const int32_t *o;
    const uint8_t *d;
    if (!PyArg_ParseTuple(args, "y*y*", &off, &data)) return NULL;
    Py_ssize_t n = column_view(&off, &data, &o, &d);
    PyObject *out = n < 0 ? NULL : fn(n, o, d);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    return out;
}

/* one byte per value: 1 when the URL surely is its own normal form (url_is_normal, what the rows
 * half checks before normalising a target) */
static PyObject *column_normal_urls(Py_ssize_t n, const int32_t *o, const uint8_t *d) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) return NULL;
    uint8_t *flags = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) flags[i] = (uint8_t)url_is_normal(d + o[i], (size_t)(o[i + 1] - o[i]));
    return out;
}

/* one native uint64 per value (its last 16 characters read as lower-case hex), or None unless
 * every value has one width of at least 16 ending so */
static PyObject *column_hex_tails(Py_ssize_t n, const int32_t *o, const uint8_t *d) {
    int32_t width = n ? o[1] - o[0] : 0;
    if (!n || width < 16) Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out) return NULL;
    uint64_t *tails = (uint64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i + 1] - o[i] != width) goto none;
        const uint8_t *p = d + o[i + 1] - 16;
        uint64_t v = 0;
        for (int k = 0; k < 16; k++) {
            uint8_t c = p[k];
            int digit = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
            if (digit < 0) goto none;
            v = v << 4 | (uint64_t)digit;
        }
        tails[i] = v;
    }
    return out;
none:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyObject *normal_urls(PyObject *self, PyObject *args) { return over_column(args, column_normal_urls); }
static PyObject *hex_tails(PyObject *self, PyObject *args) { return over_column(args, column_hex_tails); }
