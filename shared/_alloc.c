/* Compiled kernels of shared/allocation.py: covariance check, risk parity, box-constrained active set.
 *
 * Arrays come in through the buffer protocol (C-contiguous float64 / int8); Cholesky and BLAS come from
 * SciPy's bundled LAPACK through scipy.linalg.cython_lapack capsules, so nothing is linked at build time. Every function returns plain numbers; shared/allocation.py raises the errors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef void (*potrf_t)(char *, int *, double *, int *, int *);
typedef void (*potrs_t)(char *, int *, int *, double *, int *, double *, int *, int *);

static potrf_t dpotrf_;
static potrs_t dpotrs_;

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

static int get_buf(PyObject *o, Py_buffer *v, Py_ssize_t count, Py_ssize_t itemsize, char code, int writable,
                   const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, v, flags) < 0) return -1;
    size_t fl = v->format ? strlen(v->format) : 0;
    if (v->itemsize != itemsize || fl == 0 || v->format[fl - 1] != code || v->len != count * itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd contiguous items of type '%c'", name, count, code);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* One cached workspace, taken and given back while holding the GIL: a fresh N² buffer per call would
 * cost page faults (≈5 ms for 8 MB at N=1000). */
static double *ws_cache = NULL;
static size_t ws_cache_len = 0;

static double *ws_take(size_t len) {
    if (ws_cache && ws_cache_len >= len) {
        double *p = ws_cache;
        ws_cache = NULL;
        return p;
    }
    return (double *)malloc(sizeof(double) * (len ? len : 1));
}

static void ws_give(double *p, size_t len) {
    if (!ws_cache || len > ws_cache_len) {
        free(ws_cache);
        ws_cache = p;
        ws_cache_len = len;
    } else {
        free(p);
    }
}

/* Plain loops rather than BLAS: these are memory-bound, and OpenBLAS would thread them. */
static void matvec(int n, const double *a, const double *x, double *out) {
    for (int i = 0; i < n; i++) {
        const double *row = a + (size_t)i * n;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int j = 0;
        for (; j + 4 <= n; j += 4) {
            s0 += row[j] * x[j];
            s1 += row[j + 1] * x[j + 1];
            s2 += row[j + 2] * x[j + 2];
            s3 += row[j + 3] * x[j + 3];
        }
        for (; j < n; j++) s0 += row[j] * x[j];
        out[i] = (s0 + s1) + (s2 + s3);
    }
}

static void axpy(int n, double alpha, const double *restrict x, double *restrict y) {
    for (int j = 0; j < n; j++) y[j] += alpha * x[j];
}

static double rc_err(int n, const double *y, const double *sy, const double *b) {
    double tot = 0.0, e = 0.0;
    for (int i = 0; i < n; i++) tot += y[i] * sy[i];
    for (int i = 0; i < n; i++) {
        double d = fabs(y[i] * sy[i] / tot - b[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
    }
    return e;
}

/* ------------------------------------------------------------------------------------------------ */
/* check_cov(a, n, psd) -> 0 ok, 1 NaN, 2 inf, 3 asymmetric, 4 fast PSD test failed                 */
/* Symmetrises a in place when it passes the symmetry test.                                          */
/* ------------------------------------------------------------------------------------------------ */

static PyObject *check_cov(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *ao;
    Py_ssize_t n;
    int psd;
    if (!PyArg_ParseTuple(args, "Onp", &ao, &n, &psd)) return NULL;
    Py_buffer av;
    if (get_buf(ao, &av, n * n, 8, 'd', 1, "cov") < 0) return NULL;
    double *a = (double *)av.buf;
    int has_nan = 0, has_inf = 0, code = 0;
    double scale = 0.0, asym = 0.0, dmax = 0.0, dmin = INFINITY;
    for (Py_ssize_t k = 0; k < n * n; k++) {
        double v = a[k];
        if (isnan(v)) has_nan = 1;
        else if (isinf(v)) has_inf = 1;
        else if (fabs(v) > scale) scale = fabs(v);
    }
    if (has_nan || has_inf) {
        code = has_nan ? 1 : 2;
        goto done;
    }
    /* Tiled so that a[i][j] and a[j][i] both stay in cache. */
    const Py_ssize_t B = 64;
    for (Py_ssize_t i0 = 0; i0 < n; i0 += B)
        for (Py_ssize_t j0 = i0; j0 < n; j0 += B)
            for (Py_ssize_t i = i0; i < i0 + B && i < n; i++)
                for (Py_ssize_t j = (j0 > i + 1 ? j0 : i + 1); j < j0 + B && j < n; j++) {
                    double d = fabs(a[i * n + j] - a[j * n + i]);
                    if (d > asym) asym = d;
                }
    if (asym > 1e-10 * scale) {
        code = 3;
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double dii = a[i * n + i];
        if (dii > dmax) dmax = dii;
        if (dii < dmin) dmin = dii;
    }
    if (asym > 0.0)
        for (Py_ssize_t i0 = 0; i0 < n; i0 += B)
            for (Py_ssize_t j0 = i0; j0 < n; j0 += B)
                for (Py_ssize_t i = i0; i < i0 + B && i < n; i++)
                    for (Py_ssize_t j = (j0 > i + 1 ? j0 : i + 1); j < j0 + B && j < n; j++) {
                        double m = 0.5 * (a[i * n + j] + a[j * n + i]);
                        a[i * n + j] = m;
                        a[j * n + i] = m;
                    }
    if (psd) {
        if (dmin < 0.0) {
            code = 4;
            goto done;
        }
        size_t wlen = (size_t)n * (size_t)n;
        double *w = ws_take(wlen);
        if (!w) {
            PyBuffer_Release(&av);
            return PyErr_NoMemory();
        }
        memcpy(w, a, sizeof(double) * (size_t)(n * n));
        double shift = 0.5e-10 * dmax;
        for (Py_ssize_t i = 0; i < n; i++) w[i * n + i] += shift;
        char lo = 'L';
        int ni = (int)n, info = 0;
        Py_BEGIN_ALLOW_THREADS dpotrf_(&lo, &ni, w, &ni, &info);
        Py_END_ALLOW_THREADS ws_give(w, wlen);
        if (info != 0) code = 4;
    }
done:
    PyBuffer_Release(&av);
    return PyLong_FromLong(code);
}

/* ------------------------------------------------------------------------------------------------ */
/* Risk parity on Spinu's objective f(y) = ½ y'Σy − Σ b_i log y_i                                   */
/* ------------------------------------------------------------------------------------------------ */

static double spinu(int n, const double *y, const double *sy, const double *b) {
    double q = 0.0, l = 0.0;
    for (int i = 0; i < n; i++) {
        q += y[i] * sy[i];
        l += b[i] * log(y[i]);
    }
    return 0.5 * q - l;
}

/* Newton with backtracking; ws: n*n + 6n doubles. Returns -1 if a Hessian is not positive definite. */
static int rp_newton(int n, const double *s, const double *b, double *y, double tol, int max_iter,
                     double *ws, int *iters, double *err) {
    double *h = ws, *sy = h + (size_t)n * n, *g = sy + n, *dy = g + n, *sdy = dy + n, *yn = sdy + n,
           *syn = yn + n;
    matvec(n, s, y, sy);
    double e = rc_err(n, y, sy, b);
    int it = 0;
    while (e > tol && it < max_iter) {
        it++;
        memcpy(h, s, sizeof(double) * (size_t)n * n);
        for (int i = 0; i < n; i++) {
            g[i] = sy[i] - b[i] / y[i];
            h[(size_t)i * n + i] += b[i] / (y[i] * y[i]);
            dy[i] = -g[i];
        }
        char lo = 'L';
        int one = 1, info = 0;
        dpotrf_(&lo, &n, h, &n, &info);
        if (info != 0) return -1;
        dpotrs_(&lo, &n, &one, h, &n, dy, &n, &info);
        double step = 1.0, slope = 0.0;
        for (int i = 0; i < n; i++) {
            if (dy[i] < 0.0) {
                double r = 0.99 * (-y[i] / dy[i]);
                if (r < step) step = r;
            }
            slope += g[i] * dy[i];
        }
        matvec(n, s, dy, sdy);
        double f0 = spinu(n, y, sy, b);
        double slack = 1e-14 * (fabs(f0) + 1.0);
        int ok = 0;
        for (int ls = 0; ls < 60; ls++) {
            for (int i = 0; i < n; i++) {
                yn[i] = y[i] + step * dy[i];
                syn[i] = sy[i] + step * sdy[i];
            }
            double f1 = spinu(n, yn, syn, b);
            if (f1 <= f0 + 1e-4 * step * slope + slack) {
                ok = 1;
                break;
            }
            step *= 0.5;
        }
        if (!ok) break; /* rounding floor reached */
        memcpy(y, yn, sizeof(double) * n);
        matvec(n, s, y, sy); /* fresh product, no drift */
        e = rc_err(n, y, sy, b);
    }
    *iters = it;
    *err = e;
    return 0;
}

/* Cyclical coordinate descent; the error is checked on the running Σy and confirmed on a fresh product. */
static void rp_ccd(int n, const double *s, const double *b, double *y, double tol, int max_iter, double *ws,
                   int *iters, double *err) {
    double *sy = ws;
    matvec(n, s, y, sy);
    double e = rc_err(n, y, sy, b);
    int sweeps = 0;
    while (e > tol && sweeps < max_iter) {
        sweeps++;
        for (int i = 0; i < n; i++) {
            const double *row = s + (size_t)i * n;
            double d = row[i], xi = y[i];
            double c = sy[i] - d * xi;
            double root = sqrt(c * c + 4.0 * d * b[i]);
            double xn = c > 0.0 ? 2.0 * b[i] / (root + c) : (root - c) / (2.0 * d);
            if (xn != xi) {
                axpy(n, xn - xi, row, sy);
                y[i] = xn;
            }
        }
        e = rc_err(n, y, sy, b);
        if (e <= tol || sweeps % 8 == 0 || sweeps == max_iter) {
            matvec(n, s, y, sy);
            e = rc_err(n, y, sy, b);
        }
    }
    *iters = sweeps;
    *err = e;
}

/* rp(sigma, b, y, n, tol, max_iter, mode, ccd_sweeps) -> (status, iterations, error, used)
 * mode 0 Newton, 1 CCD, 2 CCD for at most ccd_sweeps sweeps then Newton. used: 0 newton, 1 ccd,
 * 2 ccd+newton. status -1: a Newton Hessian was not positive definite. */
static PyObject *rp(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *so, *bo, *yo;
    Py_ssize_t n;
    double tol;
    int max_iter, mode, ccd_sweeps;
    if (!PyArg_ParseTuple(args, "OOOndiii", &so, &bo, &yo, &n, &tol, &max_iter, &mode, &ccd_sweeps))
        return NULL;
    Py_buffer sv, bv, yv;
    if (get_buf(so, &sv, n * n, 8, 'd', 0, "sigma") < 0) return NULL;
    if (get_buf(bo, &bv, n, 8, 'd', 0, "b") < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (get_buf(yo, &yv, n, 8, 'd', 1, "y") < 0) {
        PyBuffer_Release(&sv);
        PyBuffer_Release(&bv);
        return NULL;
    }
    int ni = (int)n, status = 0, it = 0, used = 0;
    double e = 0.0;
    size_t wsize = (mode == 1 ? 0 : (size_t)ni * ni) + 7 * (size_t)ni;
    double *ws = ws_take(wsize);
    if (!ws) {
        PyBuffer_Release(&sv);
        PyBuffer_Release(&bv);
        PyBuffer_Release(&yv);
        return PyErr_NoMemory();
    }
    const double *s = (const double *)sv.buf, *b = (const double *)bv.buf;
    double *y = (double *)yv.buf;
    Py_BEGIN_ALLOW_THREADS if (mode == 0) {
        status = rp_newton(ni, s, b, y, tol, max_iter, ws, &it, &e);
    }
    else if (mode == 1) {
        used = 1;
        rp_ccd(ni, s, b, y, tol, max_iter, ws, &it, &e);
    }
    else {
        used = 1;
        rp_ccd(ni, s, b, y, tol, max_iter < ccd_sweeps ? max_iter : ccd_sweeps, ws, &it, &e);
        if (e > tol) {
            int more = 0;
            double tot = 0.0;
            matvec(ni, s, y, ws);
            for (int i = 0; i < ni; i++) tot += y[i] * ws[i];
            double k = 1.0 / sqrt(tot);
            for (int i = 0; i < ni; i++) y[i] *= k;
            used = 2;
            status = rp_newton(ni, s, b, y, tol, max_iter, ws, &more, &e);
            it += more;
        }
    }
    Py_END_ALLOW_THREADS ws_give(ws, wsize);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&yv);
    return Py_BuildValue("iidi", status, it, e, used);
}

/* ------------------------------------------------------------------------------------------------ */
/* Primal active set for min ½x'Qx − c'x  s.t.  a'x = 1,  lo ≤ x ≤ hi                              */
/* state[i]: 0 free, 1 at lo, 2 at hi. x must be feasible on entry.                                  */
/* ------------------------------------------------------------------------------------------------ */

/* mv(q, c, a, lo, hi, x, state, n, max_iter) -> (status, iterations, nu)
 * status 0 optimal, 1 iteration limit, 2 singular free block (x and state stay feasible). */
static PyObject *mv(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *qo, *co, *ao, *loo, *hio, *xo, *sto;
    Py_ssize_t n;
    int max_iter;
    if (!PyArg_ParseTuple(args, "OOOOOOOni", &qo, &co, &ao, &loo, &hio, &xo, &sto, &n, &max_iter))
        return NULL;
    Py_buffer bq, bc, ba, bl, bh, bx, bs;
    Py_buffer *held[7] = {&bq, &bc, &ba, &bl, &bh, &bx, &bs};
    int nheld = 0;
    if (get_buf(qo, &bq, n * n, 8, 'd', 0, "q") < 0) goto fail;
    nheld++;
    if (get_buf(co, &bc, n, 8, 'd', 0, "c") < 0) goto fail;
    nheld++;
    if (get_buf(ao, &ba, n, 8, 'd', 0, "a") < 0) goto fail;
    nheld++;
    if (get_buf(loo, &bl, n, 8, 'd', 0, "lo") < 0) goto fail;
    nheld++;
    if (get_buf(hio, &bh, n, 8, 'd', 0, "hi") < 0) goto fail;
    nheld++;
    if (get_buf(xo, &bx, n, 8, 'd', 1, "x") < 0) goto fail;
    nheld++;
    if (get_buf(sto, &bs, n, 1, 'b', 1, "state") < 0) goto fail;
    nheld++;

    const double *q = (const double *)bq.buf, *c = (const double *)bc.buf, *a = (const double *)ba.buf;
    const double *lo = (const double *)bl.buf, *hi = (const double *)bh.buf;
    double *x = (double *)bx.buf;
    signed char *st = (signed char *)bs.buf;
    int ni = (int)n;
    /* free idx, support idx (ints), then doubles: block k*k, rhs 2k, z k */
    int *fidx = (int *)malloc(sizeof(int) * 2 * (size_t)ni);
    size_t blen = (size_t)ni * ni + 3 * (size_t)ni;
    double *blk = ws_take(blen);
    if (!fidx || !blk) {
        free(fidx);
        if (blk) ws_give(blk, blen);
        for (int i = 0; i < nheld; i++) PyBuffer_Release(held[i]);
        return PyErr_NoMemory();
    }
    int *sidx = fidx + ni;
    double cmax = 0.0, amax = 0.0;
    for (int i = 0; i < ni; i++) {
        if (fabs(c[i]) > cmax) cmax = fabs(c[i]);
        if (fabs(a[i]) > amax) amax = fabs(a[i]);
    }
    int status = 1, it = 0;
    double nu = 0.0;
    Py_BEGIN_ALLOW_THREADS for (it = 1; it <= max_iter; it++) {
        int k = 0, m = 0;
        for (int i = 0; i < ni; i++) {
            if (st[i] == 0) fidx[k++] = i;
            else if (x[i] != 0.0) sidx[m++] = i; /* bound at a non-zero value */
        }
        if (k == 0) {
            status = 2;
            break;
        }
        double *h = blk, *r = blk + (size_t)k * k, *z = r + 2 * (size_t)k;
        double target = 1.0;
        for (int j = 0; j < m; j++) target -= a[sidx[j]] * x[sidx[j]];
        for (int p = 0; p < k; p++) {
            const double *row = q + (size_t)fidx[p] * ni;
            double rc = c[fidx[p]];
            for (int j = 0; j < m; j++) rc -= row[sidx[j]] * x[sidx[j]];
            for (int t = 0; t < k; t++) h[(size_t)p * k + t] = row[fidx[t]];
            r[p] = rc;
            r[k + p] = a[fidx[p]];
        }
        char L = 'L';
        int two = 2, info = 0;
        dpotrf_(&L, &k, h, &k, &info);
        if (info != 0) {
            status = 2;
            break;
        }
        dpotrs_(&L, &k, &two, h, &k, r, &k, &info);
        double au = 0.0, av = 0.0;
        for (int p = 0; p < k; p++) {
            au += a[fidx[p]] * r[p];
            av += a[fidx[p]] * r[k + p];
        }
        if (!(av > 0.0)) {
            status = 2;
            break;
        }
        nu = (target - au) / av;
        int inside = 1;
        for (int p = 0; p < k; p++) {
            z[p] = r[p] + nu * r[k + p];
            if (z[p] < lo[fidx[p]] || z[p] > hi[fidx[p]]) inside = 0;
        }
        if (inside) {
            for (int p = 0; p < k; p++) x[fidx[p]] = z[p];
            /* support = free + non-zero bound */
            int ms = 0;
            for (int i = 0; i < ni; i++)
                if (x[i] != 0.0) sidx[ms++] = i;
            double scale = cmax;
            if (fabs(nu) * amax > scale) scale = fabs(nu) * amax;
            if (scale < 1e-300) scale = 1e-300;
            double thr = 1e-12 * scale, worst = 0.0;
            int jbest = -1;
            for (int j = 0; j < ni; j++) {
                if (st[j] == 0 || lo[j] >= hi[j]) continue; /* lo == hi: fixed for good */
                const double *row = q + (size_t)j * ni;
                double g = -c[j] - nu * a[j];
                for (int t = 0; t < ms; t++) g += row[sidx[t]] * x[sidx[t]];
                double viol = st[j] == 1 ? -g : g; /* at lo needs g ≥ 0, at hi needs g ≤ 0 */
                if (viol > thr && viol > worst) {
                    worst = viol;
                    jbest = j;
                }
            }
            if (jbest < 0) {
                status = 0;
                break;
            }
            st[jbest] = 0;
            continue;
        }
        /* Step towards z until the first free weight reaches a bound; fix it there. */
        double alpha = 1.0;
        int pb = -1;
        for (int p = 0; p < k; p++) {
            int i = fidx[p];
            double ratio;
            if (z[p] < lo[i]) ratio = (x[i] - lo[i]) / (x[i] - z[p]);
            else if (z[p] > hi[i]) ratio = (hi[i] - x[i]) / (z[p] - x[i]);
            else continue;
            if (ratio < 0.0) ratio = 0.0;
            if (pb < 0 || ratio < alpha) {
                alpha = ratio;
                pb = p;
            }
        }
        if (alpha > 1.0) alpha = 1.0;
        for (int p = 0; p < k; p++) {
            int i = fidx[p];
            double v = x[i] + alpha * (z[p] - x[i]);
            if (p == pb) v = z[p] < lo[i] ? lo[i] : hi[i];
            if (v <= lo[i]) {
                v = lo[i];
                st[i] = 1;
            } else if (v >= hi[i]) {
                v = hi[i];
                st[i] = 2;
            }
            x[i] = v;
        }
    }
    Py_END_ALLOW_THREADS if (it > max_iter) it = max_iter;
    free(fidx);
    ws_give(blk, blen);
    for (int i = 0; i < nheld; i++) PyBuffer_Release(held[i]);
    return Py_BuildValue("iid", status, it, nu);
fail:
    for (int i = 0; i < nheld; i++) PyBuffer_Release(held[i]);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------ */

static void *capsule(PyObject *mod, const char *name) {
    PyObject *d = PyObject_GetAttrString(mod, "__pyx_capi__");
    if (!d) return NULL;
    PyObject *cap = PyDict_GetItemString(d, name);
    void *p = NULL;
    if (cap) p = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    else PyErr_Format(PyExc_ImportError, "scipy capsule %s not found", name);
    Py_DECREF(d);
    return p;
}

static PyMethodDef methods[] = {
    {"check_cov", check_cov, METH_VARARGS, "check_cov(a, n, psd) -> code; symmetrises a in place"},
    {"rp", rp, METH_VARARGS, "rp(sigma, b, y, n, tol, max_iter, mode, ccd_sweeps) -> (status, it, err, used)"},
    {"mv", mv, METH_VARARGS, "mv(q, c, a, lo, hi, x, state, n, max_iter) -> (status, it, nu)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_alloc", "Compiled allocation kernels.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__alloc(void) {
    PyObject *lapack = PyImport_ImportModule("scipy.linalg.cython_lapack");
    if (!lapack) return NULL;
    dpotrf_ = (potrf_t)capsule(lapack, "dpotrf");
    dpotrs_ = (potrs_t)capsule(lapack, "dpotrs");
    Py_DECREF(lapack);
    if (!dpotrf_ || !dpotrs_) return NULL;
    return PyModule_Create(&moddef);
}
