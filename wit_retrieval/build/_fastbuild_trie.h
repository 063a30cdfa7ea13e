/* The Aho-Corasick automaton: its layout, construction and scan (part of _fastbuild.c, included there) */

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
/* pyahocorasick 2.3's iter_long over w[0..end): calls emit(last_index, value) for each match.
 * After a match it starts over at the root just past it (no overlaps). A node that is no key
 * but whose fail link is one is remembered (only while nothing longer was seen) and used when
 * the path dies without a match: the scan resumes from that fail node at its position. */
typedef int (*EmitFn)(void *ctx, int32_t last, int32_t value);

static int iter_long(const Automaton *a, const uint32_t *w, int32_t end, EmitFn emit, void *ctx) {
    int32_t state = 0, index = -1, last_node = -1, last_index = -1;
    for (;;) {
        int32_t fail_node = -1, fail_index = -1, failover = 0;  /* per match, as per next() call */
        index += 1;
        while (index < end) {
            int32_t next;
            if (failover) {
                next = a->node[fail_node].fail;
                index = fail_index;
                fail_node = fail_index = -1;
                failover = 0;
            } else {
                next = go(a, state, w[index]);
            }
            if (next >= 0) {
                const Node *node = &a->node[next];
                if (node->value >= 0) {
                    last_node = next;
                    last_index = index;
                } else if (last_node < 0 && fail_node < 0 && (node->count & FAIL_IS_KEY)) {
                    fail_node = next;
                    fail_index = index;
                }
                state = next;
                index += 1;
            } else if (last_node >= 0) {
                break;
            } else if (fail_node >= 0) {
                failover = 1;
            } else {
                for (;;) {
                    state = a->node[state].fail;
                    if (state < 0) { state = 0; index += 1; break; }
                    if (go(a, state, w[index]) >= 0) break;
                }
            }
        }
        if (last_node < 0) return 0;
        if (emit(ctx, last_index, a->node[last_node].value) < 0) return -1;
        state = 0;
        index = last_index;
        last_node = last_index = -1;
    }
}
