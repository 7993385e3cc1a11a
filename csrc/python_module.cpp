// The Python module semiearth._C: importing it loads the ops above into torch.ops.semiearth.
#include <Python.h>

static PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"with_cuda", with_cuda, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "SemiEarth C++/CUDA ops", -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
