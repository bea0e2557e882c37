/*
 * A stand-in for libedgetpu.so.1 in tests: a TFLite external delegate that claims no
 * node, so the model runs on the CPU through exactly the load_delegate() call the
 * Edge TPU target makes for the real runtime.
 *
 * Interface: tensorflow/lite/delegates/external/external_delegate_interface.h
 *   TfLiteDelegate* tflite_plugin_create_delegate(char** options_keys,
 *       char** options_values, size_t num_options, void (*report_error)(const char*));
 *   void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);
 * (ai_edge_litert's Delegate class loads the library with ctypes and calls these.)
 *
 * TfLiteDelegate layout: tensorflow/lite/core/c/common.h (TF >= 2.13: the
 * opaque_delegate_builder pointer was appended; it must be NULL for Prepare to be used).
 *
 * Test hooks, through the environment:
 *   EDGETPU_STUB_RECORD  file to which every option is appended as "key=value\n"
 *   EDGETPU_STUB_FAIL    if set, creation fails: report_error(its value), return NULL
 *                        (what libedgetpu does when the device cannot be opened)
 *
 * Build: gcc -shared -fPIC -o libedgetpu.so.1 stub_delegate.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef int TfLiteBufferHandle;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(void* context, struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle, void* tensor);
  TfLiteStatus (*CopyToBufferHandle)(void* context, struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle, void* tensor);
  void (*FreeBufferHandle)(void* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

/* Claims no node: every op stays with the interpreter's CPU kernels. */
static TfLiteStatus StubPrepare(void* context, TfLiteDelegate* delegate) {
  (void)context;
  (void)delegate;
  return kTfLiteOk;
}

TfLiteDelegate* tflite_plugin_create_delegate(char** options_keys, char** options_values,
                                              size_t num_options,
                                              void (*report_error)(const char*)) {
  const char* record = getenv("EDGETPU_STUB_RECORD");
  if (record != NULL && record[0] != '\0') {
    FILE* f = fopen(record, "a");
    if (f != NULL) {
      for (size_t i = 0; i < num_options; ++i) {
        fprintf(f, "%s=%s\n", options_keys[i], options_values[i]);
      }
      fclose(f);
    }
  }
  const char* fail = getenv("EDGETPU_STUB_FAIL");
  if (fail != NULL && fail[0] != '\0') {
    if (report_error != NULL) report_error(fail);
    return NULL;
  }
  TfLiteDelegate* delegate = (TfLiteDelegate*)calloc(1, sizeof(TfLiteDelegate));
  if (delegate == NULL) {
    if (report_error != NULL) report_error("stub delegate: out of memory");
    return NULL;
  }
  delegate->Prepare = StubPrepare;
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { free(delegate); }
