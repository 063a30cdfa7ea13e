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

/* ---------------------------------------------------------------- sha256 */

#ifdef HAVE_OPENSSL
/* OpenSSL's SHA-256 (SHA-NI / AVX2 where the CPU has them): what Python's hashlib runs too */
#include <openssl/sha.h>
typedef SHA256_CTX Sha;
static void sha_init(Sha *s) { SHA256_Init(s); }
static void sha_update(Sha *s, const uint8_t *p, size_t n) { SHA256_Update(s, p, n); }
static void sha_digest(Sha *s, uint8_t *md) { SHA256_Final(md, s); }
#else
/* portable SHA-256 (FIPS 180-4), for machines without OpenSSL's headers */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t used; } Sha;
static const uint32_t K256[64] = {
    0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(Sha *s, const uint8_t *p) {
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3]; e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha_init(Sha *s) {
    static const uint32_t H0[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->len = 0;
    s->used = 0;
}

static void sha_update(Sha *s, const uint8_t *p, size_t n) {
    s->len += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take; p += take; n -= take;
        if (s->used < 64) return;
        sha_block(s, s->buf);
        s->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha_block(s, p);
    memcpy(s->buf, p, n);
    s->used = n;
}

static void sha_digest(Sha *s, uint8_t *md) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha_update(s, &pad, 1);
    while (s->used != 56) sha_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 32; i++) md[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}
#endif

/* the first 16 hex digits of the digest (what every id of the project keeps) */
static void sha_hex16(Sha *s, char *out) {
    static const char hex[] = "0123456789abcdef";
    uint8_t md[32];
    sha_digest(s, md);
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
}

/* ---------------------------------------------------------------- growable buffers */

typedef struct { char *data; size_t len, cap; } Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) { PyErr_NoMemory(); return -1; }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int buf_i32(Buf *b, int32_t v) { return buf_put(b, &v, 4); }
static int buf_i64(Buf *b, int64_t v) { return buf_put(b, &v, 8); }

/* an Arrow string column: int32 offsets (starting with 0) and UTF-8 data */
typedef struct { Buf offsets, data; } StrCol;

static int strcol_init(StrCol *c) { memset(c, 0, sizeof *c); return buf_i32(&c->offsets, 0); }
static int strcol_add(StrCol *c, const void *p, size_t n) {
    if (buf_put(&c->data, p, n) < 0) return -1;
    return buf_i32(&c->offsets, (int32_t)c->data.len);
}
static void strcol_free(StrCol *c) { free(c->offsets.data); free(c->data.data); }

static PyObject *buf_bytes(Buf *b) { return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len); }

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

/* ---------------------------------------------------------------- the automaton */

/* Each node's children are one sorted run of edges: a step reads one node and one edge run. */
typedef struct { uint32_t first, count; int32_t fail, value; } Node;  /* fail -1: the root; value -1: no key */
#define FAIL_IS_KEY 0x80000000u  /* in count: the fail link is a key (iter_long asks at every step;
                                    a flag here saves a random read of the fail node) */
#define SINGLE_NEXT 0x40000000u  /* in count: one child, node i + 1, and `first` holds its code point
                                    (most nodes of a name trie: a step then reads no edge) */
#define CHILDREN(n) ((n)->count & ~(FAIL_IS_KEY | SINGLE_NEXT))
typedef struct { uint32_t cp; int32_t child; } Edge;

typedef struct {
    PyObject_HEAD
    int32_t nodes;
    Node *node;
    Edge *edge;
    int32_t *root;      /* dense children of the root for code points < 0x10000 */
    int32_t *vlen, *vright, *vleft, *vtarget;
    Py_ssize_t values;
} Automaton;

static inline int32_t go(const Automaton *a, int32_t s, uint32_t c) {
    if (s == 0 && c < 0x10000) return a->root[c];
    const Node *n = &a->node[s];
    if (n->count & SINGLE_NEXT) return n->first == c ? s + 1 : -1;
    const Edge *e = a->edge + n->first;
    uint32_t lo = 0, hi = CHILDREN(n), count = hi;
    if (hi <= 8) {
        for (uint32_t i = 0; i < hi; i++) if (e[i].cp == c) return e[i].child;
        return -1;
    }
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (e[mid].cp < c) lo = mid + 1; else hi = mid;
    }
    return (lo < count && e[lo].cp == c) ? e[lo].child : -1;
}

static void automaton_free_arrays(Automaton *a) {
    free(a->node); free(a->edge); free(a->root);
    free(a->vlen); free(a->vright); free(a->vleft); free(a->vtarget);
    a->node = NULL; a->edge = NULL; a->root = NULL;
    a->vlen = a->vright = a->vleft = a->vtarget = NULL;
}

static void automaton_dealloc(Automaton *a) {
    automaton_free_arrays(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* the trie while it is built: children as linked lists, nodes in insertion order */
typedef struct { uint32_t cp; int32_t child, sibling; } BuildEdge;
typedef struct { BuildEdge *edges; int32_t *first, *value; size_t nodes, nedges; } Trie;

static void trie_free(Trie *t) { free(t->edges); free(t->first); free(t->value); }

static int build_trie(Trie *t, PyObject *keys) {
    size_t cap = 1024;
    memset(t, 0, sizeof *t);
    t->edges = malloc(cap * sizeof *t->edges);
    t->first = malloc(cap * sizeof *t->first);
    t->value = malloc(cap * sizeof *t->value);
    if (!t->edges || !t->first || !t->value) goto nomem;
    t->first[0] = -1; t->value[0] = -1; t->nodes = 1;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(keys); k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        if (!PyUnicode_Check(key)) { PyErr_SetString(PyExc_TypeError, "keys must be str"); return -1; }
        int32_t s = 0;
        for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(key); i++) {
            uint32_t c = PyUnicode_READ_CHAR(key, i);
            int32_t child = -1;
            for (int32_t e = t->first[s]; e >= 0; e = t->edges[e].sibling)
                if (t->edges[e].cp == c) { child = t->edges[e].child; break; }
            if (child < 0) {
                if (t->nodes == cap) {  /* nodes and edges grow together: each node but the root has one edge */
                    cap *= 2;
                    BuildEdge *e2 = realloc(t->edges, cap * sizeof *e2);
                    if (e2) t->edges = e2;
                    int32_t *f2 = realloc(t->first, cap * sizeof *f2);
                    if (f2) t->first = f2;
                    int32_t *v2 = realloc(t->value, cap * sizeof *v2);
                    if (v2) t->value = v2;
                    if (!e2 || !f2 || !v2) goto nomem;
                }
                child = (int32_t)t->nodes++;
                t->first[child] = -1; t->value[child] = -1;
                t->edges[t->nedges] = (BuildEdge){c, child, t->first[s]};
                t->first[s] = (int32_t)t->nedges++;
            }
            s = child;
        }
        t->value[s] = (int32_t)k;  /* a repeated key keeps the last value, as add_word does */
    }
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

static int cmp_edge(const void *x, const void *y) {
    uint32_t a = ((const BuildEdge *)x)->cp, b = ((const BuildEdge *)y)->cp;
    return a < b ? -1 : a > b;
}

/* a build node's children, sorted by code point, into tmp; returns their count */
static uint32_t sorted_children(const Trie *t, int32_t old, BuildEdge *tmp) {
    uint32_t count = 0;
    for (int32_t e = t->first[old]; e >= 0; e = t->edges[e].sibling) tmp[count++] = t->edges[e];
    qsort(tmp, count, sizeof *tmp, cmp_edge);
    return count;
}

/* Renumber: the top TOP_DEPTH levels breadth first (every scan starts there: they stay in cache
 * together), each deeper subtree depth first (a name's path lies in consecutive nodes and edges,
 * read in order as a scan walks down it). Then the fail links, breadth first. */
#define TOP_DEPTH 4

static int finish_automaton(Automaton *a, Trie *t) {
    int32_t n = (int32_t)t->nodes;
    a->nodes = n;
    a->node = malloc(sizeof(Node) * n);
    a->edge = malloc(sizeof(Edge) * (t->nedges + 1));
    a->root = malloc(sizeof(int32_t) * 0x10000);
    int32_t *order = malloc(sizeof(int32_t) * n), *renamed = malloc(sizeof(int32_t) * n);
    int32_t *stack = malloc(sizeof(int32_t) * (n + 1)), *depth = malloc(sizeof(int32_t) * n);
    BuildEdge *tmp = malloc(sizeof(BuildEdge) * (t->nedges + 1));
    if (!a->node || !a->edge || !a->root || !order || !renamed || !stack || !depth || !tmp) {
        free(order); free(renamed); free(stack); free(depth); free(tmp);
        PyErr_NoMemory();
        return -1;
    }
    int32_t count = 0, head = 0;
    order[count++] = 0;
    depth[0] = 0;
    while (head < count) {  /* the top levels, breadth first */
        int32_t old = order[head++];
        if (depth[old] == TOP_DEPTH) continue;
        uint32_t k = sorted_children(t, old, tmp);
        for (uint32_t j = 0; j < k; j++) { depth[tmp[j].child] = depth[old] + 1; order[count++] = tmp[j].child; }
    }
    int32_t top_count = count;
    for (int32_t i = 0; i < top_count; i++) {  /* below each deepest top node, depth first */
        if (depth[order[i]] != TOP_DEPTH) continue;
        int32_t top = 0;
        uint32_t k = sorted_children(t, order[i], tmp);
        while (k) stack[top++] = tmp[--k].child;
        while (top) {
            int32_t old = stack[--top];
            order[count++] = old;
            k = sorted_children(t, old, tmp);
            while (k) stack[top++] = tmp[--k].child;
        }
    }
    for (int32_t i = 0; i < n; i++) renamed[order[i]] = i;
    free(depth);
    uint32_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        uint32_t k = sorted_children(t, order[i], tmp);
        a->node[i] = (Node){pos, k, -1, t->value[order[i]]};
        for (uint32_t j = 0; j < k; j++) a->edge[pos + j] = (Edge){tmp[j].cp, renamed[tmp[j].child]};
        pos += k;
    }
    free(renamed);
    free(tmp);
    for (uint32_t c = 0; c < 0x10000; c++) a->root[c] = -1;
    for (uint32_t j = 0; j < a->node[0].count; j++)
        if (a->edge[j].cp < 0x10000) a->root[a->edge[j].cp] = a->edge[j].child;
    int32_t tail = 0;  /* breadth first (order is reused as the queue) */
    head = 0;
    for (uint32_t j = 0; j < a->node[0].count; j++) { a->node[a->edge[j].child].fail = 0; order[tail++] = a->edge[j].child; }
    while (head < tail) {
        const Node *node = &a->node[order[head++]];
        for (uint32_t j = node->first; j < node->first + CHILDREN(node); j++) {
            int32_t child = a->edge[j].child, state = node->fail;
            uint32_t letter = a->edge[j].cp;
            order[tail++] = child;
            while (state != 0 && go(a, state, letter) < 0) state = a->node[state].fail;
            int32_t next = go(a, state, letter);
            a->node[child].fail = next >= 0 ? next : 0;
            if (a->node[child].fail > 0 && a->node[a->node[child].fail].value >= 0) a->node[child].count |= FAIL_IS_KEY;
        }
    }
    for (int32_t i = 0; i < n; i++) {  /* last: go() reads `first` as a code point from here on */
        Node *node = &a->node[i];
        if (CHILDREN(node) == 1 && a->edge[node->first].child == i + 1) {
            node->first = a->edge[node->first].cp;
            node->count |= SINGLE_NEXT;
        }
    }
    free(order);
    free(stack);
    return 0;
}

static int automaton_load(Automaton *a, Py_buffer *b);

static int automaton_init(Automaton *a, PyObject *args, PyObject *kw) {
    PyObject *keys, *values;
    if (PyTuple_GET_SIZE(args) == 1) {  /* Automaton(blob): what to_bytes() gave */
        Py_buffer b;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, 0), &b, PyBUF_SIMPLE) < 0) return -1;
        int rc = automaton_load(a, &b);
        PyBuffer_Release(&b);
        return rc;
    }
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &keys, &PyList_Type, &values)) return -1;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n) { PyErr_SetString(PyExc_ValueError, "keys and values differ in length"); return -1; }
    automaton_free_arrays(a);
    a->values = n;
    a->vlen = malloc(sizeof(int32_t) * (n + 1)); a->vright = malloc(sizeof(int32_t) * (n + 1));
    a->vleft = malloc(sizeof(int32_t) * (n + 1)); a->vtarget = malloc(sizeof(int32_t) * (n + 1));
    if (!a->vlen || !a->vright || !a->vleft || !a->vtarget) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t k = 0; k < n; k++) {
        int length, right, left, target;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(values, k), "iiii", &length, &right, &left, &target)) return -1;
        a->vlen[k] = length; a->vright[k] = right; a->vleft[k] = left; a->vtarget[k] = target;
    }
    Trie t;
    int rc = build_trie(&t, keys);
    if (rc == 0) rc = finish_automaton(a, &t);
    trie_free(&t);
    return rc;
}

/* pyahocorasick 2.3's iter_long over w[0..end): calls emit(last_index, value) for each match.
 * After a match it starts over at the root just past it (no overlaps). A node that is no key
 * but whose fail link is one is remembered (only while nothing longer was seen) and used when
 * the path dies without a match: the scan resumes from that fail node at its position. */
typedef int (*EmitFn)(void *ctx, int32_t last, int32_t value);

/* iter_long as a machine that advances one character per scan_step(), so that several rows can
 * be scanned in turn: while one row waits for a trie node from memory, the others run (the scan
 * is bound by those waits, not by arithmetic). `fresh` marks the start of one next() call of
 * pyahocorasick's iterator: its fail-over memory is per call. */
typedef struct {
    const Automaton *a;
    const uint32_t *w;
    int32_t end, state, index, last_node, last_index, fail_node, fail_index, failover, fresh;
} Scan;

static void scan_init(Scan *s, const Automaton *a, const uint32_t *w, int32_t end) {
    *s = (Scan){a, w, end, 0, -1, -1, -1, -1, -1, 0, 1};
}

/* 1: more to do, 0: done, -1: emit failed */
static int scan_step(Scan *s, EmitFn emit, void *ctx) {
    const Automaton *a = s->a;
    if (s->fresh) {
        s->fail_node = s->fail_index = -1;
        s->failover = 0;
        s->index += 1;
        s->fresh = 0;
    }
    if (s->index < s->end) {
        int32_t next;
        if (s->failover) {
            next = a->node[s->fail_node].fail;
            s->index = s->fail_index;
            s->fail_node = s->fail_index = -1;
            s->failover = 0;
        } else {
            next = go(a, s->state, s->w[s->index]);
        }
        if (next >= 0) {
            const Node *node = &a->node[next];
            if (node->value >= 0) {
                s->last_node = next;
                s->last_index = s->index;
            } else if (s->last_node < 0 && s->fail_node < 0 && (node->count & FAIL_IS_KEY)) {
                s->fail_node = next;
                s->fail_index = s->index;
            }
            s->state = next;
            s->index += 1;
            __builtin_prefetch(&a->node[next + 1]);  /* the next step reads a child: often this one */
            return 1;
        }
        if (s->last_node < 0) {
            if (s->fail_node >= 0) {
                s->failover = 1;
                return 1;
            }
            for (;;) {
                s->state = a->node[s->state].fail;
                if (s->state < 0) { s->state = 0; s->index += 1; break; }
                if (go(a, s->state, s->w[s->index]) >= 0) break;
            }
            __builtin_prefetch(&a->node[s->state]);
            return 1;
        }
    }
    /* the path died after a match, or the text ended: the match, then start over past it */
    if (s->last_node < 0) return 0;
    if (emit(ctx, s->last_index, a->node[s->last_node].value) < 0) return -1;
    s->state = 0;
    s->index = s->last_index;
    s->last_node = s->last_index = -1;
    s->fresh = 1;
    return 1;
}

/* pyahocorasick 2.3's iter_long over w[0..end): emit(last_index, value) for each match.
 * After a match it starts over at the root just past it (no overlaps). A node that is no key
 * but whose fail link is one is remembered (only while nothing longer was seen) and used when
 * the path dies without a match: the scan resumes from that fail node at its position. */
static int iter_long(const Automaton *a, const uint32_t *w, int32_t end, EmitFn emit, void *ctx) {
    Scan s;
    int rc;
    scan_init(&s, a, w, end);
    while ((rc = scan_step(&s, emit, ctx)) == 1) {}
    return rc;
}

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
    for (uint32_t c = 0; c < 0x10000; c++) a->root[c] = -1;
    const Node *root = &a->node[0];
    if (root->count & SINGLE_NEXT) {
        if (root->first < 0x10000) a->root[root->first] = 1;
    } else {
        for (uint32_t j = root->first; j < root->first + CHILDREN(root); j++)
            if (a->edge[j].cp < 0x10000) a->root[a->edge[j].cp] = a->edge[j].child;
    }
    for (uint32_t i = 0; i < h.nodes; i++) {  /* every link must stay inside the arrays */
        const Node *n = &a->node[i];
        if (n->fail >= (int32_t)h.nodes || n->value >= (int32_t)h.values ||
            (!(n->count & SINGLE_NEXT) && n->first + CHILDREN(n) > h.edges) || ((n->count & SINGLE_NEXT) && i + 1 >= h.nodes))
            goto bad;
    }
    for (uint32_t j = 0; j < h.edges; j++) if (a->edge[j].child < 0 || a->edge[j].child >= (int32_t)h.nodes) goto bad;
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

static PyMethodDef module_methods[] = {
    {"set_charinfo", set_charinfo, METH_O, "set_charinfo(fn): fn(cp) -> (match form of the folded character, nfc_safe)"},
    {"process", (PyCFunction)(void (*)(void))process_batch, METH_VARARGS | METH_KEYWORDS, PROCESS_DOC},
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
