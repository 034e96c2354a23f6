// facesvc demo page: pick, drop, paste or take a photo; see its faces; enrol it; log in with it,
// or log in at the camera with a liveness check.
// Plain browser JavaScript, no build step and no third-party code. Every call goes to the
// service's public /v1 routes, with relative URLs (the page lives at <service>/demo).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    apiKey: $("api-key"),
    drop: $("drop"),
    canvas: $("canvas"),
    video: $("video"),
    file: $("file"),
    camera: $("camera"),
    capture: $("capture"),
    showBoxes: $("show-boxes"),
    showPoints: $("show-points"),
    showMesh: $("show-mesh"),
    summary: $("summary"),
    enrolForm: $("enrol-form"),
    enrolName: $("enrol-name"),
    enrol: $("enrol"),
    enrolResult: $("enrol-result"),
    login: $("login"),
    loginResult: $("login-result"),
    faces: $("faces"),
    livenessPrompt: $("liveness-prompt"),
    livenessUser: $("liveness-user"),
    livenessStart: $("liveness-start"),
    livenessChallenges: $("liveness-challenges"),
    livenessFrames: $("liveness-frames"),
    livenessResult: $("liveness-result"),
  };

  const API_KEY_STORAGE = "facesvc.demo.apiKey";
  const FACE_COLORS = ["#22c55e", "#f97316", "#a855f7", "#3b82f6", "#eab308", "#ef4444"];
  const POINT_COLORS = ["#22d3ee", "#22d3ee", "#facc15", "#f472b6", "#f472b6"];
  const FIVE_POINTS = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"];
  // Contours of the 468-point MediaPipe face mesh (indices from MediaPipe's
  // face_mesh_connections), drawn as lines over the points: [indices, closed].
  const MESH_CONTOURS = [
    [[10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
      152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109], true],
    [[33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246], true],
    [[263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466], true],
    [[70, 63, 105, 66, 107, 55, 65, 52, 53, 46], false],
    [[300, 293, 334, 296, 336, 285, 295, 282, 283, 276], false],
    [[61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40,
      185], true],
    [[78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80,
      191], true],
  ];

  const state = {
    photo: null, // the current photo (a File or Blob)
    image: null, // it decoded, for drawing
    imageUrl: null,
    size: null, // the image size the service saw: {width, height}
    faces: [],
    analysis: 0, // increases with every photo, so a late answer for an old one is dropped
    stream: null, // the camera, while it is on
    enrolled: new Map(), // name -> user id, for the users enrolled from this page
  };

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function call(method, path, body) {
    const headers = new Headers({ Accept: "application/json" });
    const key = els.apiKey.value.trim();
    if (key) headers.set("X-API-Key", key);
    const init = { method, headers };
    if (body instanceof FormData) {
      init.body = body; // the browser sets the multipart boundary
    } else if (body !== undefined) {
      headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : null;
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function describe(error) {
    const problem = error instanceof ApiError ? error.problem : null;
    if (problem && problem.title) {
      return problem.detail ? `${problem.title}: ${problem.detail}` : problem.title;
    }
    return error.message || String(error);
  }

  function photoForm() {
    const form = new FormData();
    form.append("image", state.photo, state.photo.name || "photo.jpg");
    return form;
  }

  // -- the photo --------------------------------------------------------------------------

  function loadImage(blob) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(blob);
      const image = new Image();
      image.onload = () => resolve({ image, url });
      image.onerror = () => {
        URL.revokeObjectURL(url);
        reject(new Error("this browser cannot display the file; is it an image?"));
      };
      image.src = url;
    });
  }

  async function setPhoto(blob) {
    stopCamera();
    const analysis = ++state.analysis;
    state.photo = blob;
    state.faces = [];
    state.size = null;
    els.faces.replaceChildren();
    els.canvas.dataset.faces = "";
    els.canvas.dataset.state = "analysing";
    setStatus(els.loginResult, "", "");
    try {
      const { image, url } = await loadImage(blob);
      if (analysis !== state.analysis) return URL.revokeObjectURL(url);
      if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
      Object.assign(state, { image, imageUrl: url });
      els.drop.dataset.state = "photo";
      draw();
      setStatus(els.summary, "", "Finding faces\u2026");
      const started = performance.now();
      const result = await call("POST", "v1/landmarks?dense=true", photoForm());
      if (analysis !== state.analysis) return;
      const ms = Math.round(performance.now() - started);
      state.size = result.image;
      state.faces = result.faces;
      draw();
      listFaces();
      const n = result.faces.length;
      setStatus(
        els.summary,
        n ? "ok" : "unknown",
        n
          ? `${n} face${n > 1 ? "s" : ""} in ${result.image.width}\u00d7${result.image.height} px` +
              ` \u00b7 boxes, 5 landmarks and the 468-point mesh \u00b7 ${ms} ms`
          : "No face found. Try a sharper, better lit photo where the face is at least 40 px wide.",
      );
      els.canvas.dataset.faces = String(n);
      els.canvas.dataset.state = "done";
    } catch (error) {
      if (analysis !== state.analysis) return;
      els.canvas.dataset.state = "error";
      setStatus(els.summary, "error", describe(error));
    }
  }

  function firstImage(files) {
    return Array.from(files || []).find((f) => f.type.startsWith("image/")) || null;
  }

  // -- drawing ----------------------------------------------------------------------------

  function draw() {
    const image = state.image;
    if (!image) return;
    const canvas = els.canvas;
    const ratio = window.devicePixelRatio || 1;
    const room = els.drop.clientWidth - 4;
    const maxHeight = Math.max(320, window.innerHeight * 0.72);
    // Small photos (LFW's are 250 px) are shown larger, up to 3x, so the mesh stays legible.
    const scale = Math.min(room / image.naturalWidth, maxHeight / image.naturalHeight, 3);
    const width = Math.max(1, Math.round(image.naturalWidth * scale));
    const height = Math.max(1, Math.round(image.naturalHeight * scale));
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(image, 0, 0, width, height);
    if (!state.size || !state.faces.length) return;
    // Coordinates come in the pixels of the image the service decoded.
    const sx = width / state.size.width;
    const sy = height / state.size.height;
    state.faces.forEach((face, i) => {
      const color = FACE_COLORS[i % FACE_COLORS.length];
      if (els.showMesh.checked && face.mesh) drawMesh(ctx, face, sx, sy, color);
      if (els.showBoxes.checked) drawBox(ctx, face, sx, sy, color, i + 1);
      if (els.showPoints.checked) drawPoints(ctx, face, sx, sy);
    });
  }

  function drawMesh(ctx, face, sx, sy, color) {
    const size = Math.min(face.box.width * sx, face.box.height * sy);
    const radius = Math.max(0.6, Math.min(1.7, size / 170));
    ctx.fillStyle = "rgba(255, 255, 255, 0.78)";
    for (const [x, y] of face.mesh) {
      ctx.beginPath();
      ctx.arc(x * sx, y * sy, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.strokeStyle = color;
    ctx.globalAlpha = 0.85;
    ctx.lineWidth = Math.max(1, radius);
    ctx.lineJoin = "round";
    for (const [indices, closed] of MESH_CONTOURS) {
      ctx.beginPath();
      indices.forEach((index, k) => {
        const [x, y] = face.mesh[index];
        if (k === 0) ctx.moveTo(x * sx, y * sy);
        else ctx.lineTo(x * sx, y * sy);
      });
      if (closed) ctx.closePath();
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }

  function drawBox(ctx, face, sx, sy, color, number) {
    const { x, y, width, height } = face.box;
    const [left, top, w, h] = [x * sx, y * sy, width * sx, height * sy];
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.roundRect(left, top, w, h, Math.min(8, w / 10));
    ctx.stroke();
    const label = `${number} \u00b7 ${face.score.toFixed(2)}`;
    ctx.font = "600 13px system-ui, sans-serif";
    const tagWidth = ctx.measureText(label).width + 12;
    const tagTop = top >= 22 ? top - 22 : top + h + 2;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.roundRect(left, tagTop, tagWidth, 20, 5);
    ctx.fill();
    ctx.fillStyle = "#ffffff";
    ctx.textBaseline = "middle";
    ctx.fillText(label, left + 6, tagTop + 10.5);
  }

  function drawPoints(ctx, face, sx, sy) {
    const size = Math.min(face.box.width * sx, face.box.height * sy);
    const radius = Math.max(2.5, Math.min(5, size / 22));
    FIVE_POINTS.forEach((name, i) => {
      const [x, y] = face.landmarks[name];
      ctx.beginPath();
      ctx.arc(x * sx, y * sy, radius, 0, 2 * Math.PI);
      ctx.fillStyle = POINT_COLORS[i];
      ctx.fill();
      ctx.lineWidth = Math.max(1.5, radius / 2.5);
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    });
  }

  const LISTED_FACES = 8;

  function listFaces() {
    const items = state.faces.slice(0, LISTED_FACES).map((face, i) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = FACE_COLORS[i % FACE_COLORS.length];
      const { width, height } = face.box;
      const size = `${Math.round(width)}\u00d7${Math.round(height)} px`;
      item.append(swatch, `score ${face.score.toFixed(2)} \u00b7 ${size}`);
      return item;
    });
    const more = state.faces.length - LISTED_FACES;
    if (more > 0) {
      const item = document.createElement("li");
      item.className = "more";
      item.textContent = `and ${more} more`;
      items.push(item);
    }
    els.faces.replaceChildren(...items);
  }

  // -- enrol and log in -------------------------------------------------------------------

  function setStatus(element, kind, text) {
    element.dataset.state = kind;
    element.textContent = text;
  }

  function needPhoto(element) {
    if (state.photo) return true;
    setStatus(element, "error", "Choose, drop or take a photo first.");
    return false;
  }

  async function enrol(event) {
    event.preventDefault();
    const name = els.enrolName.value.trim();
    if (!name || !needPhoto(els.enrolResult)) return;
    els.enrol.disabled = true;
    setStatus(els.enrolResult, "", `Enrolling ${name}\u2026`);
    let userId = state.enrolled.get(name);
    let created = false;
    try {
      if (!userId) {
        userId = (await call("POST", "v1/users", { name })).id;
        created = true;
      }
      const form = photoForm();
      form.append("consent", "true"); // the form's required checkbox was ticked
      await call("POST", `v1/users/${userId}/faces`, form);
      state.enrolled.set(name, userId);
      const user = await call("GET", `v1/users/${userId}`);
      const photos = `${user.face_count} photo${user.face_count > 1 ? "s" : ""}`;
      setStatus(els.enrolResult, "ok", `Enrolled ${user.name} (${photos}).`);
      loadUsers();
    } catch (error) {
      // A user created for a photo that could not be enrolled would be an empty user.
      if (created) await call("DELETE", `v1/users/${userId}`).catch(() => {});
      if (!created && error instanceof ApiError && error.status === 404) {
        state.enrolled.delete(name); // deleted elsewhere: the next try creates them again
      }
      setStatus(els.enrolResult, "error", describe(error));
    } finally {
      els.enrol.disabled = false;
    }
  }

  async function logIn() {
    if (!needPhoto(els.loginResult)) return;
    els.login.disabled = true;
    setStatus(els.loginResult, "", "Looking\u2026");
    try {
      const result = await call("POST", "v1/identify?top_k=3", photoForm());
      const best = result.candidates[0];
      const threshold = result.threshold.toFixed(2);
      if (result.match) {
        const who = result.candidates.find((c) => c.user_id === result.match) || best;
        setStatus(
          els.loginResult,
          "match",
          `Welcome, ${who.name}! (similarity ${who.similarity.toFixed(2)} \u2265 ${threshold})`,
        );
      } else if (best) {
        setStatus(
          els.loginResult,
          "unknown",
          `Unknown person (closest: ${best.name}, ${best.similarity.toFixed(2)} < ${threshold})`,
        );
      } else {
        setStatus(els.loginResult, "unknown", "Unknown person (nobody is enrolled yet)");
      }
    } catch (error) {
      setStatus(els.loginResult, "error", describe(error));
    } finally {
      els.login.disabled = false;
    }
  }

  // -- the camera (optional: needs https or localhost, and permission) --------------------

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("No camera here: it needs https (or localhost).");
    }
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
    } catch (error) {
      throw new Error(`No camera: ${error.message || error.name}`);
    }
    els.video.srcObject = state.stream;
    els.video.hidden = false;
    els.drop.dataset.state = "camera";
    els.capture.hidden = false;
    els.camera.textContent = "Stop the camera";
    await els.video.play();
  }

  async function toggleCamera() {
    if (state.stream) {
      stopCamera();
      return;
    }
    try {
      await startCamera();
      setStatus(els.summary, "", "Look at the camera, then take the photo.");
    } catch (error) {
      setStatus(els.summary, "error", error.message);
    }
  }

  // The video's current frame as a JPEG Blob (null without a camera), at most maxWidth wide.
  function videoFrame(maxWidth = Infinity, quality = 0.92) {
    const { videoWidth: width, videoHeight: height } = els.video;
    if (!state.stream || !width || !height) return Promise.resolve(null);
    const scale = Math.min(1, maxWidth / width);
    const frame = document.createElement("canvas");
    frame.width = Math.round(width * scale);
    frame.height = Math.round(height * scale);
    frame.getContext("2d").drawImage(els.video, 0, 0, frame.width, frame.height);
    return new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", quality));
  }

  async function capture() {
    const blob = await videoFrame();
    if (blob) setPhoto(new File([blob], "camera.jpg", { type: "image/jpeg" }));
  }

  function stopCamera() {
    if (!state.stream) return;
    for (const track of state.stream.getTracks()) track.stop();
    state.stream = null;
    els.video.srcObject = null;
    els.video.hidden = true;
    els.capture.hidden = true;
    els.camera.textContent = "Use the camera";
    els.drop.dataset.state = state.image ? "photo" : "empty";
  }

  // -- log in with liveness ---------------------------------------------------------------
  // The service draws the challenges (turn left or right, blink, open the mouth) in a random
  // order; the page shows the current one and sends camera frames, one request at a time,
  // until the session passes or fails. A passed session then logs in once, with one more
  // frame whose face must be the session's.

  const PROMPTS = {
    turn_left: "Turn your head to your left",
    turn_right: "Turn your head to your right",
    blink: "Close your eyes for a moment (blink)",
    open_mouth: "Open your mouth",
  };
  const FRAME_INTERVAL_MS = 300;
  const FRAMES_PER_REQUEST = 2; // captured while a request was out; older ones are dropped
  const FRAME_MAX_WIDTH = 640; // plenty for the detector, and small uploads

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function loadUsers() {
    try {
      const { items } = await call("GET", "v1/users?limit=500");
      const chosen = els.livenessUser.value;
      const options = items.map((user) => new Option(user.name, user.id));
      if (!options.length) options.push(new Option("(enrol someone first)", ""));
      els.livenessUser.replaceChildren(...options);
      if (items.some((user) => user.id === chosen)) els.livenessUser.value = chosen;
    } catch {
      // no key yet, or one without the enrol scope: the list stays as it is
    }
  }

  function setPrompt(text) {
    els.livenessPrompt.textContent = text;
    els.livenessPrompt.hidden = !text;
  }

  function showSession(session) {
    const items = session.challenges.map((challenge, i) => {
      const item = document.createElement("li");
      item.textContent = PROMPTS[challenge] || challenge;
      item.dataset.challenge = challenge;
      const ongoing = session.status === "in_progress";
      let mark = "";
      if (i < session.completed) mark = "done";
      else if (i === session.completed) mark = ongoing ? "current" : "failed";
      item.dataset.state = mark;
      return item;
    });
    els.livenessChallenges.replaceChildren(...items);
    els.livenessFrames.textContent = `frames used: ${session.frames} / ${session.max_frames}`;
    if (session.status !== "in_progress") return;
    const results = session.frame_results || [];
    const last = results[results.length - 1];
    const hint = last && last.faces === 0 ? " (no face in view)" : "";
    setPrompt(PROMPTS[session.current] + hint);
  }

  // Sends camera frames until the session has ended; returns it as it ended.
  async function runSession(session, stream) {
    const queue = [];
    const timer = setInterval(async () => {
      const blob = await videoFrame(FRAME_MAX_WIDTH, 0.9);
      if (!blob) return;
      queue.push(blob);
      if (queue.length > FRAMES_PER_REQUEST) queue.shift();
    }, FRAME_INTERVAL_MS);
    try {
      while (session.status === "in_progress") {
        if (state.stream !== stream) throw new Error("Stopped: the camera was turned off.");
        if (!queue.length) {
          await sleep(50);
          continue;
        }
        const form = new FormData();
        queue.splice(0).forEach((blob, i) => form.append("frames", blob, `frame${i}.jpg`));
        try {
          session = await call("POST", `v1/liveness/sessions/${session.id}/frames`, form);
        } catch (error) {
          // 409: it ended meanwhile (expired); read why
          if (!(error instanceof ApiError && error.status === 409)) throw error;
          session = await call("GET", `v1/liveness/sessions/${session.id}`);
          if (session.status === "in_progress") throw error;
        }
        showSession(session);
      }
      return session;
    } finally {
      clearInterval(timer);
    }
  }

  async function logInWithLiveness() {
    const userId = els.livenessUser.value;
    if (!userId) {
      setStatus(els.livenessResult, "error", "Choose who is logging in (enrol them first).");
      return;
    }
    const name = els.livenessUser.selectedOptions[0].text;
    els.livenessStart.disabled = true;
    els.livenessStart.textContent = "Log in with liveness";
    els.livenessChallenges.replaceChildren();
    els.livenessFrames.textContent = "";
    setStatus(els.livenessResult, "", "Starting the camera\u2026");
    try {
      if (!state.stream) await startCamera();
      const stream = state.stream;
      els.capture.hidden = true;
      setStatus(els.summary, "", "Liveness check: do what the video asks.");
      setStatus(els.livenessResult, "", "Follow the prompt on the video.");
      let session = await call("POST", "v1/liveness/sessions");
      showSession(session);
      session = await runSession(session, stream);
      if (session.status !== "passed") {
        const why = session.reason_text || session.reason || session.status;
        setStatus(els.livenessResult, "failed", `Liveness check failed: ${why}.`);
        els.livenessStart.textContent = "Try again";
        return;
      }
      setPrompt("Passed. Logging in\u2026");
      setStatus(els.livenessResult, "", `Liveness passed. Logging in as ${name}\u2026`);
      const frame = await videoFrame();
      if (!frame) throw new Error("Stopped: the camera was turned off.");
      const form = new FormData();
      form.append("image", frame, "login.jpg");
      const query = `liveness_session=${encodeURIComponent(session.id)}`;
      const result = await call("POST", `v1/users/${userId}/verify?${query}`, form);
      if (result.match) {
        const score = result.similarity.toFixed(2);
        const threshold = result.threshold.toFixed(2);
        setStatus(
          els.livenessResult,
          "match",
          `Welcome, ${name}! (live; similarity ${score} \u2265 ${threshold})`,
        );
      } else {
        setStatus(els.livenessResult, "unknown", `Not ${name}: the face does not match.`);
      }
      // Show the frame that logged in, with its faces.
      setPhoto(new File([frame], "login.jpg", { type: "image/jpeg" }));
    } catch (error) {
      setStatus(els.livenessResult, "error", describe(error));
      els.livenessStart.textContent = "Try again";
    } finally {
      setPrompt("");
      stopCamera();
      els.livenessStart.disabled = false;
    }
  }

  // -- wiring -----------------------------------------------------------------------------

  els.apiKey.value = localStorage.getItem(API_KEY_STORAGE) || "";
  els.apiKey.addEventListener("input", () => {
    localStorage.setItem(API_KEY_STORAGE, els.apiKey.value.trim());
  });
  els.apiKey.addEventListener("change", loadUsers); // a whole key: typed or pasted, then left

  els.file.addEventListener("change", () => {
    const file = els.file.files[0];
    els.file.value = ""; // choosing the same file again still fires "change"
    if (file) setPhoto(file);
  });
  els.drop.addEventListener("click", () => {
    if (els.drop.dataset.state === "empty") els.file.click();
  });
  for (const name of ["dragenter", "dragover"]) {
    els.drop.addEventListener(name, (event) => {
      event.preventDefault();
      els.drop.classList.add("dragging");
    });
  }
  els.drop.addEventListener("dragleave", () => els.drop.classList.remove("dragging"));
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    els.drop.classList.remove("dragging");
    const file = firstImage(event.dataTransfer && event.dataTransfer.files);
    if (file) setPhoto(file);
    else setStatus(els.summary, "error", "Drop an image file (JPEG, PNG, WebP or BMP).");
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (file) setPhoto(file);
  });

  els.camera.addEventListener("click", toggleCamera);
  els.capture.addEventListener("click", capture);
  for (const toggle of [els.showBoxes, els.showPoints, els.showMesh]) {
    toggle.addEventListener("change", draw);
  }
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(draw);
  });

  els.enrolForm.addEventListener("submit", enrol);
  els.login.addEventListener("click", logIn);
  els.livenessStart.addEventListener("click", logInWithLiveness);
  if (els.apiKey.value) loadUsers(); // without a key, the service would only answer 401
  document.documentElement.dataset.ready = "true";
})();
