/*
 * The MMIR shard function's per-row work in C: fold, scan, mask, filter, ids.
 *
 * `build/fastpath.py` is the only caller and `shard._queries_python` is the reference this
 * must equal byte for byte (tests/test_build_fastpath.py runs both on the same rows).
 * Why C: in Python a row cost ~30 us (the Aho-Corasick match loop, masking, two sha256 ids,
 * filters and the output columns), against ~2.5 us of C for reading the row.
 *
 * Everything is done over whole Arrow batches: strings come in as (int32 offsets, UTF-8
 * data) buffers and the kept rows go out as Arrow-ready buffers, so no Python object is made
 * per row. Unicode facts C cannot know (NFKC + casefold, NFC checks, URL normalisation, the
 * rare decomposed row) are asked of Python through callbacks and cached per code point.
 *
 * Automaton.iter_long follows pyahocorasick 2.x's iter_long step for step (including its
 * fail-over rule), so that the matches, hence the masks, are the same as the Python path's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include "_fastbuild_sha.h"

/* ---------------------------------------------------------------- per code point facts */

/* info[cp]: -1 unknown, else an index into `pool`: pool[i] = flags | len << 8, then len code points
 * of the character's match form (match_form(NFKC(c).casefold() or c)) */
#define INFO_NFC_SAFE 1
static int32_t *g_info = NULL;
static uint32_t *g_pool = NULL;
static size_t g_pool_len = 0, g_pool_cap = 0;
static PyObject *g_charinfo = NULL;  /* callable(cp) -> (form: str, nfc_safe: bool) */

static const uint32_t *char_info(uint32_t cp) {
    if (cp > 0x10FFFF) return NULL;
    if (!g_info) {
        g_info = malloc(sizeof(int32_t) * 0x110000);
        if (!g_info) { PyErr_NoMemory(); return NULL; }
        memset(g_info, 0xff, sizeof(int32_t) * 0x110000);
    }
    if (g_info[cp] >= 0) return g_pool + g_info[cp];
    if (!g_charinfo) { PyErr_SetString(PyExc_RuntimeError, "set_charinfo() was not called"); return NULL; }
    PyObject *res = PyObject_CallFunction(g_charinfo, "I", cp);
    if (!res) return NULL;
    PyObject *form;
    int safe;
    if (!PyArg_ParseTuple(res, "Up", &form, &safe)) { Py_DECREF(res); return NULL; }
    Py_ssize_t n = PyUnicode_GET_LENGTH(form);
    if (g_pool_len + n + 1 > g_pool_cap) {
        size_t cap = g_pool_cap ? g_pool_cap * 2 : 4096;
        while (cap < g_pool_len + n + 1) cap *= 2;
        uint32_t *pool = realloc(g_pool, cap * sizeof(uint32_t));
        if (!pool) { Py_DECREF(res); PyErr_NoMemory(); return NULL; }
        g_pool = pool;
        g_pool_cap = cap;
    }
    uint32_t *entry = g_pool + g_pool_len;
    entry[0] = (safe ? INFO_NFC_SAFE : 0) | (uint32_t)n << 8;
    for (Py_ssize_t i = 0; i < n; i++) entry[1 + i] = PyUnicode_READ_CHAR(form, i);
    g_info[cp] = (int32_t)g_pool_len;
    g_pool_len += n + 1;
    Py_DECREF(res);
    return g_pool + g_info[cp];
}

static PyObject *set_charinfo(PyObject *self, PyObject *fn) {
    Py_XINCREF(fn);
    Py_XSETREF(g_charinfo, fn);
    free(g_info);
    g_info = NULL;
    g_pool_len = 0;
    Py_RETURN_NONE;
}

/* scripts written without spaces: each character is a word (names.uses_spaces) */
static int spaceless(uint32_t cp) {
    return (0x0E00 <= cp && cp <= 0x0EFF) || (0x1000 <= cp && cp <= 0x109F) || (0x1780 <= cp && cp <= 0x17FF)
        || (0x0F00 <= cp && cp <= 0x0FFF) || (0x3040 <= cp && cp <= 0x30FF) || (0x3400 <= cp && cp <= 0x9FFF)
        || (0xAC00 <= cp && cp <= 0xD7AF) || (0xF900 <= cp && cp <= 0xFAFF) || cp >= 0x20000;
}

/* Python's re `\w` on str: alphanumeric (isalpha, isdecimal, isdigit, isnumeric) or underscore */
static int is_word(uint32_t cp) {
    if (cp < 128) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    return Py_UNICODE_ISALNUM((Py_UCS4)cp);
}

/* names._ASCII_FORM: lower-case letters and digits, underscore and NUL stay, all else is a space */
static uint32_t ascii_form(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == 0) return c;
    return ' ';
}

#include "_fastbuild_trie.h"

typedef struct { PyObject *list; const Automaton *a; } PyEmit;

static int py_emit(void *ctx, int32_t last, int32_t v) {
    PyEmit *e = ctx;
    const Automaton *a = e->a;
    PyObject *item = Py_BuildValue("i(iiii)", last, a->vlen[v], a->vright[v], a->vleft[v], a->vtarget[v]);
    if (!item) return -1;
    int rc = PyList_Append(e->list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *automaton_iter_long(Automaton *a, PyObject *text) {
    if (!PyUnicode_Check(text)) { PyErr_SetString(PyExc_TypeError, "str required"); return NULL; }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    uint32_t *w = malloc(sizeof(uint32_t) * (n + 1));
    if (!w) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) w[i] = PyUnicode_READ_CHAR(text, i);
    PyEmit e = {PyList_New(0), a};
    if (e.list && iter_long(a, w, (int32_t)n, py_emit, &e) < 0) Py_CLEAR(e.list);
    free(w);
    return e.list;
}

static PyObject *automaton_len(Automaton *a, PyObject *unused) { return PyLong_FromSsize_t(a->values); }

/* The built automaton as bytes (the gazetteer caches it beside its keys, so a worker loads it
 * instead of building it): a header, the nodes, the edges and the keys' (length, right, left).
 * Targets are not in it: they depend on the process's entity table (set_targets). */
#define BLOB_MAGIC 0x31424657u  /* "WFB1" */
typedef struct { uint32_t magic, nodes, edges, values; } BlobHeader;

static PyObject *automaton_to_bytes(Automaton *a, PyObject *unused) {
    uint32_t edges = a->nodes ? a->node[a->nodes - 1].first : 0;
    for (int32_t i = 0; i < a->nodes; i++)  /* edge runs of SINGLE_NEXT nodes are still in the array */
        if (!(a->node[i].count & SINGLE_NEXT) && a->node[i].first + CHILDREN(&a->node[i]) > edges)
            edges = a->node[i].first + CHILDREN(&a->node[i]);
    BlobHeader h = {BLOB_MAGIC, (uint32_t)a->nodes, edges, (uint32_t)a->values};
    size_t size = sizeof h + sizeof(Node) * h.nodes + sizeof(Edge) * h.edges + 3 * sizeof(int32_t) * h.values;
    PyObject *blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!blob) return NULL;
    char *p = PyBytes_AS_STRING(blob);
    memcpy(p, &h, sizeof h); p += sizeof h;
    memcpy(p, a->node, sizeof(Node) * h.nodes); p += sizeof(Node) * h.nodes;
    memcpy(p, a->edge, sizeof(Edge) * h.edges); p += sizeof(Edge) * h.edges;
    memcpy(p, a->vlen, sizeof(int32_t) * h.values); p += sizeof(int32_t) * h.values;
    memcpy(p, a->vright, sizeof(int32_t) * h.values); p += sizeof(int32_t) * h.values;
    memcpy(p, a->vleft, sizeof(int32_t) * h.values);
    return blob;
}

static int automaton_load(Automaton *a, Py_buffer *b) {
    BlobHeader h;
    if ((size_t)b->len < sizeof h) goto bad;
    memcpy(&h, b->buf, sizeof h);
    size_t size = sizeof h + sizeof(Node) * h.nodes + sizeof(Edge) * h.edges + 3 * sizeof(int32_t) * h.values;
    if (h.magic != BLOB_MAGIC || size != (size_t)b->len || !h.nodes) goto bad;
    automaton_free_arrays(a);
    a->nodes = (int32_t)h.nodes;
    a->values = h.values;
    a->node = malloc(sizeof(Node) * h.nodes);
    a->edge = malloc(sizeof(Edge) * (h.edges + 1));
    a->root = malloc(sizeof(int32_t) * 0x10000);
    a->vlen = malloc(sizeof(int32_t) * (h.values + 1)); a->vright = malloc(sizeof(int32_t) * (h.values + 1));
    a->vleft = malloc(sizeof(int32_t) * (h.values + 1)); a->vtarget = malloc(sizeof(int32_t) * (h.values + 1));
    if (!a->node || !a->edge || !a->root || !a->vlen || !a->vright || !a->vleft || !a->vtarget) {
        PyErr_NoMemory();
        return -1;
    }
    const char *p = (const char *)b->buf + sizeof h;
    memcpy(a->node, p, sizeof(Node) * h.nodes); p += sizeof(Node) * h.nodes;
    memcpy(a->edge, p, sizeof(Edge) * h.edges); p += sizeof(Edge) * h.edges;
    memcpy(a->vlen, p, sizeof(int32_t) * h.values); p += sizeof(int32_t) * h.values;
    memcpy(a->vright, p, sizeof(int32_t) * h.values); p += sizeof(int32_t) * h.values;
    memcpy(a->vleft, p, sizeof(int32_t) * h.values);
    for (uint32_t k = 0; k < h.values; k++) a->vtarget[k] = -1;  /* blockers until set_targets */
    /* the blob may come from storage others write to: every link must stay inside the arrays,
     * checked before anything follows one (the root's edges included) */
    for (uint32_t i = 0; i < h.nodes; i++) {
        const Node *n = &a->node[i];
        if (n->fail >= (int32_t)h.nodes || (i > 0 && n->fail < 0) || n->value >= (int32_t)h.values || n->value < -1 ||
            (!(n->count & SINGLE_NEXT) && (uint64_t)n->first + CHILDREN(n) > h.edges) ||
            ((n->count & SINGLE_NEXT) && i + 1 >= h.nodes))
            goto bad;
    }
    for (uint32_t j = 0; j < h.edges; j++) if (a->edge[j].child < 0 || a->edge[j].child >= (int32_t)h.nodes) goto bad;
    for (uint32_t c = 0; c < 0x10000; c++) a->root[c] = -1;
    const Node *root = &a->node[0];
    if (root->count & SINGLE_NEXT) {
        if (root->first < 0x10000) a->root[root->first] = 1;
    } else {
        for (uint32_t j = root->first; j < root->first + CHILDREN(root); j++)
            if (a->edge[j].cp < 0x10000) a->root[a->edge[j].cp] = a->edge[j].child;
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not an automaton blob of this version (rebuild the gazetteer cache)");
    return -1;
}

static PyObject *automaton_set_targets(Automaton *a, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    if (b.len != (Py_ssize_t)(4 * a->values)) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "set_targets needs one int32 per key");
        return NULL;
    }
    memcpy(a->vtarget, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef automaton_methods[] = {
    {"iter_long", (PyCFunction)automaton_iter_long, METH_O,
     "[(last_index, (length, right, left, target))] as pyahocorasick's iter_long gives them"},
    {"size", (PyCFunction)automaton_len, METH_NOARGS, "number of keys"},
    {"to_bytes", (PyCFunction)automaton_to_bytes, METH_NOARGS, "the automaton without its targets, for Automaton(blob)"},
    {"set_targets", (PyCFunction)automaton_set_targets, METH_O, "set_targets(int32 buffer): each key's target"},
    {NULL}};

static PyTypeObject AutomatonType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wit_retrieval.build._fastbuild.Automaton",
    .tp_basicsize = sizeof(Automaton),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Automaton(keys: list[str], values: list[(length, right, left, target)]) or Automaton(blob)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)automaton_init,
    .tp_dealloc = (destructor)automaton_dealloc,
    .tp_methods = automaton_methods,
};

#include "_fastbuild_rows.h"
#include "_fastbuild_batch.h"
#include "_fastbuild_keys.h"

static PyMethodDef module_methods[] = {
    {"set_charinfo", set_charinfo, METH_O, "set_charinfo(fn): fn(cp) -> (match form of the folded character, nfc_safe)"},
    {"process", (PyCFunction)(void (*)(void))process_batch, METH_VARARGS | METH_KEYWORDS, PROCESS_DOC},
    {"normal_urls", normal_urls, METH_VARARGS, "normal_urls(offsets, data) -> bytes: 1 per URL that surely is its own normal form"},
    {"hex_tails", hex_tails, METH_VARARGS,
     "hex_tails(offsets, data) -> bytes of native uint64 (each value's last 16 lower-case hex digits) or None"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastbuild", "MMIR shard rows in C", -1, module_methods};

PyMODINIT_FUNC PyInit__fastbuild(void) {
    if (PyType_Ready(&AutomatonType) < 0) return NULL;
    init_url_chars();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&AutomatonType);
    if (PyModule_AddObject(m, "Automaton", (PyObject *)&AutomatonType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
