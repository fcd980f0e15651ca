// The page: draw on the pad, and each stroke is prepared (digit.js) and classified on the GPU by
// the model kuma build compiled from models/classifier.py. It shows load progress, the answer
// with all ten probabilities and the inference time, or says plainly when there is no WebGPU.
// Tests feed exact inputs through window.kumaReady (the loaded model) and window.kumaClassify, and
// know the answer shown is for the drawing as it is now when #digit's data-drawing equals #pad's.

import { load } from "kuma:classifier";
import { prepareDigit } from "./digit.js";
import { loadModel, showError } from "./loading.js";
import "./style.css";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const pen = pad.getContext("2d", { willReadFrequently: true });

pad.dataset.drawing = $("digit").dataset.drawing = "0";

const ready = loadModel(load);
ready.catch((error) => showError(error, document.querySelector(".board")));
window.kumaReady = ready;
window.kumaClassify = async (image) => (await (await ready).run({ image })).logits;

// each change to the drawing gets the next number (#pad's data-drawing), and each answer shown
// carries the number of the drawing it classified (#digit's data-drawing): an answer to a
// half-drawn stroke is never taken for the answer to the finished one
let drawing = 0;

function drawn() {
  pad.dataset.drawing = String(++drawing);
}

function answered(number) {
  $("digit").dataset.drawing = String(number);
}

// one classification in flight; strokes drawn meanwhile are read once it finishes
let busy = false, pending = false;

async function classifyDrawing() {
  if (busy) {
    pending = true;
    return;
  }
  busy = true;
  try {
    const number = drawing; // the pixels read next are this drawing's
    const pixels = pen.getImageData(0, 0, pad.width, pad.height).data;
    const ink = new Float32Array(pad.width * pad.height);
    for (let i = 0; i < ink.length; i++) ink[i] = pixels[4 * i + 3] / 255; // the alpha channel is the ink
    const image = prepareDigit(ink, pad.width, pad.height);
    if (image) {
      const model = await ready;
      const started = performance.now();
      const { logits } = await model.run({ image });
      showAnswer(softmax(logits), performance.now() - started);
    }
    answered(number);
  } finally {
    busy = false;
    if (pending) {
      pending = false;
      classifyDrawing();
    }
  }
}

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((value) => Math.exp(value - top));
  const sum = exps.reduce((a, b) => a + b);
  return exps.map((value) => value / sum);
}

const bars = Array.from({ length: 10 }, (_, digit) => {
  const row = document.createElement("li");
  row.innerHTML = `<span class="label">${digit}</span><span class="bar"><span></span></span><span class="value"></span>`;
  $("bars").append(row);
  return row;
});

function showAnswer(probabilities, ms) {
  const best = probabilities.indexOf(Math.max(...probabilities));
  $("digit").textContent = String(best);
  $("confidence").textContent = `${(100 * probabilities[best]).toFixed(1)}% sure`;
  probabilities.forEach((p, digit) => {
    bars[digit].classList.toggle("best", digit === best);
    bars[digit].querySelector(".bar span").style.width = `${100 * p}%`;
    bars[digit].querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
  });
  $("timing").textContent = `Inference ${ms.toFixed(1)} ms (upload, run, read back)`;
}

function clear() {
  pen.clearRect(0, 0, pad.width, pad.height);
  drawn();
  answered(drawing); // nothing to classify
  $("digit").textContent = "?";
  $("confidence").textContent = "";
  $("timing").textContent = "";
  for (const row of bars) {
    row.classList.remove("best");
    row.querySelector(".bar span").style.width = "0";
    row.querySelector(".value").textContent = "";
  }
}

// drawing with mouse, pen or finger: round strokes about as thick, for the 28x28 image, as MNIST's
pen.lineWidth = 18;
pen.lineCap = pen.lineJoin = "round";
pen.strokeStyle = "#1b1b1f";
let last = null;

function point(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  pen.beginPath();
  pen.arc(...last, pen.lineWidth / 2, 0, 2 * Math.PI);
  pen.fillStyle = pen.strokeStyle;
  pen.fill();
  drawn();
});
pad.addEventListener("pointermove", (event) => {
  if (!last) return;
  const next = point(event);
  pen.beginPath();
  pen.moveTo(...last);
  pen.lineTo(...next);
  pen.stroke();
  last = next;
  drawn();
  classifyDrawing();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!last) return;
    last = null;
    classifyDrawing();
  });
}
$("clear").addEventListener("click", clear);
