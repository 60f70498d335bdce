// The caffe command-line tool (tools/caffe.cpp) with its main() renamed and
// a C entry point, built as libcaffe_tool (patch 0013). The pip wheel's
// `caffe` command loads it into a running Python process with ctypes.PyDLL
// and calls caffe_tool_main: Python layers then run in that interpreter, and
// no shared libpython has to be installed on the machine.
#define main caffe_tool_main_cxx
#include "../caffe.cpp"
#undef main

extern "C" int caffe_tool_main(int argc, char** argv) {
  return caffe_tool_main_cxx(argc, argv);
}
