// WebLLM's appConfig for a tsubame MLC export, built from the webllm.json the exporter writes.
// Pure functions, no WebLLM import: tests run this file under node.

// The export is served under the page at this path. WebLLM appends "resolve/main/" to any model URL
// lacking a "/resolve/<branch>/" part (Hugging Face layout), so the folder sits at model/resolve/main/.
export const MODEL_PATH = "model/resolve/main/";
// Written by export/mlc.py next to the weights: model id, model library, overrides.
export const DESCRIPTOR_FILE = "webllm.json";
// Files WebLLM reads from the model folder before the shards the index names.
export const MODEL_FILES = ["mlc-chat-config.json", "tensor-cache.json"];

/**
 * @param descriptor the parsed webllm.json: {model_id, model_lib: {stock} | {file}, overrides, required_features}
 * @param pageUrl    the page's URL (window.location.href)
 * @param stock      {modelLibURLPrefix, modelVersion} from @mlc-ai/web-llm, for stock model libraries
 */
export function buildAppConfig(descriptor, pageUrl, stock) {
  const modelUrl = new URL(MODEL_PATH, pageUrl).href;
  return {
    model_list: [
      {
        model: modelUrl,
        model_id: descriptor.model_id,
        model_lib: modelLibUrl(descriptor.model_lib, modelUrl, stock),
        overrides: descriptor.overrides,
        required_features: descriptor.required_features,
      },
    ],
  };
}

export function modelLibUrl(modelLib, modelUrl, stock) {
  if (modelLib.stock) {
    // a stock WebLLM library: the one this npm version of WebLLM was released with
    return stock.modelLibURLPrefix + stock.modelVersion + "/" + modelLib.stock;
  }
  if (modelLib.file) {
    // compiled with `mlc_llm compile ... -o <export folder>/<file>`: it lies beside the weights
    return new URL(modelLib.file, modelUrl).href;
  }
  throw new Error(DESCRIPTOR_FILE + " names no model library (neither 'stock' nor 'file')");
}
