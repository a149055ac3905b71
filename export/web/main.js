// The demo: load the export named by model/resolve/main/webllm.json into WebLLM and chat with it.
import * as webllm from "@mlc-ai/web-llm";
import { buildAppConfig, DESCRIPTOR_FILE, MODEL_FILES, MODEL_PATH } from "./app-config.js";

const status = document.getElementById("status");
const log = document.getElementById("log");
const form = document.getElementById("form");
const input = document.getElementById("input");
const messages = [];

function show(role, text) {
  const item = document.createElement("p");
  item.className = role;
  item.textContent = text;
  log.appendChild(item);
  return item;
}

async function readDescriptor() {
  const modelUrl = new URL(MODEL_PATH, window.location.href);
  for (const file of [DESCRIPTOR_FILE, ...MODEL_FILES]) {
    const response = await fetch(new URL(file, modelUrl), { method: "HEAD" });
    if (!response.ok) {
      throw new Error(`${MODEL_PATH}${file} is missing: link the export folder there (see README.md)`);
    }
  }
  return (await fetch(new URL(DESCRIPTOR_FILE, modelUrl))).json();
}

async function start() {
  if (!navigator.gpu) {
    status.textContent = "This browser has no WebGPU; use a recent Chrome or Edge.";
    return;
  }
  const descriptor = await readDescriptor();
  const appConfig = buildAppConfig(descriptor, window.location.href, webllm);
  const engine = await webllm.CreateMLCEngine(descriptor.model_id, {
    appConfig,
    initProgressCallback: (report) => (status.textContent = report.text),
  });
  status.textContent = `${descriptor.model_id} is ready.`;
  input.disabled = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    show("user", text);
    messages.push({ role: "user", content: text });
    const reply = show("assistant", "");
    const chunks = await engine.chat.completions.create({ messages, stream: true });
    for await (const chunk of chunks) {
      reply.textContent += chunk.choices[0]?.delta.content ?? "";
    }
    messages.push({ role: "assistant", content: reply.textContent });
  });
}

start().catch((error) => (status.textContent = `Could not start: ${error.message}`));
