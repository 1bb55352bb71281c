// The page: pick or drop a photo, choose how to look, draw a box, see hashtags and results.
const $ = (id) => document.getElementById(id);
let blob = null, img = null, box = null, roi = null, dragging = null;

function mode() { return document.querySelector('input[name=mode]:checked').value; }

// A phone's photo (12-50 Mpixel, several MB) is shrunk here to MAX_SIDE before it is sent: the
// models read a few hundred pixels of it, a mobile upload gets much smaller, and the server's
// pixel limit is never reached. Drawn upright (the browser applies the EXIF orientation), the
// copy needs no orientation of its own; boxes and the answer's ROI are in its pixels.
const MAX_SIDE = 1600;

async function load(b) {
  const shown = new Image();
  shown.src = URL.createObjectURL(b);
  try { await shown.decode(); } catch (e) {
    // not shown here (HEIC outside Safari, TIFF): the server may still read it, without a box
    blob = b; img = null; box = null; roi = null; $('canvas').style.display = 'none'; $('go').disabled = false;
    $('status').textContent = 'This browser cannot show this photo; it can still be searched, but no box drawn on it.';
    return;
  }
  const s = MAX_SIDE / Math.max(shown.naturalWidth, shown.naturalHeight);
  if (s < 1) {
    const c = document.createElement('canvas');
    c.width = Math.round(shown.naturalWidth * s); c.height = Math.round(shown.naturalHeight * s);
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, c.width, c.height);   // a cutout's transparency: white, not
    ctx.drawImage(shown, 0, 0, c.width, c.height);                   // the black a JPEG would make of it
    URL.revokeObjectURL(shown.src);
    return load(await new Promise((done) => c.toBlob(done, 'image/jpeg', 0.92)));
  }
  blob = b; img = shown; box = null; roi = null;
  draw(); $('canvas').style.display = 'block'; $('go').disabled = false; $('status').textContent = '';
}

function scale() { return img.naturalWidth / $('canvas').width; }

function draw() {
  if (!img) return;
  const c = $('canvas'), ctx = c.getContext('2d');
  const w = Math.min(360, img.naturalWidth);
  c.width = w; c.height = Math.round(img.naturalHeight * w / img.naturalWidth);
  ctx.drawImage(img, 0, 0, c.width, c.height);
  const s = scale();
  if (roi) { ctx.strokeStyle = '#0a0'; ctx.lineWidth = 3; ctx.strokeRect(roi[0] / s, roi[1] / s, roi[2] / s, roi[3] / s); }
  if (box) { ctx.strokeStyle = '#e04'; ctx.lineWidth = 2; ctx.setLineDash([6, 3]);
             ctx.strokeRect(box[0] / s, box[1] / s, box[2] / s, box[3] / s); ctx.setLineDash([]); }
}

// Drawing the box: pointer events, so a finger on a phone draws as a mouse does. The canvas may
// be shown smaller than its own pixels (a narrow screen), so a point is read against its shown size.
function photoPoint(e) {
  const c = $('canvas'), r = c.getBoundingClientRect(), s = img.naturalWidth / c.clientWidth;   // inside the border
  return [(e.clientX - r.left - c.clientLeft) * s, (e.clientY - r.top - c.clientTop) * s];
}
$('canvas').addEventListener('pointerdown', (e) => {
  if (mode() !== 'box') document.querySelector('input[value=box]').checked = true;
  $('canvas').setPointerCapture(e.pointerId);
  dragging = photoPoint(e);
});
$('canvas').addEventListener('pointermove', (e) => {
  if (!dragging) return;
  const [x, y] = photoPoint(e), clip = (v, hi) => Math.max(0, Math.min(hi, v));
  const x0 = clip(Math.min(dragging[0], x), img.naturalWidth), x1 = clip(Math.max(dragging[0], x), img.naturalWidth);
  const y0 = clip(Math.min(dragging[1], y), img.naturalHeight), y1 = clip(Math.max(dragging[1], y), img.naturalHeight);
  box = [x0, y0, x1 - x0, y1 - y0];
  roi = null; draw();
});
for (const end of ['pointerup', 'pointercancel']) $('canvas').addEventListener(end, () => { dragging = null; });

$('file').addEventListener('change', (e) => e.target.files[0] && load(e.target.files[0]));
$('drop').addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('over'); });
$('drop').addEventListener('dragleave', () => $('drop').classList.remove('over'));
$('drop').addEventListener('drop', (e) => {
  e.preventDefault(); $('drop').classList.remove('over');
  if (e.dataTransfer.files[0]) load(e.dataTransfer.files[0]);
});

async function showHealth() {
  // ok: quiet; degraded: which shards are missing (their items are left out of answers); down: nothing answers
  const h = await (await fetch('/health')).json();
  const missing = Object.entries(h.unavailable || {}).map(([n, why]) => `${n} (${why})`).join(', ');
  $('health').className = h.status;
  $('health').textContent = h.status === 'ok' ? `${h.answering} of ${h.shards} shards answering`
    : `${h.status.toUpperCase()}: ${h.answering} of ${h.shards} shards answering` +
      (missing ? `; missing ${missing}` : '') + (h.coordinator !== 'ok' ? `; coordinator: ${h.coordinator}` : '');
}

async function init() {
  showHealth();
  const groups = await (await fetch('/categories?grouped=true')).json();   // under their great-category
  $('category').innerHTML = '<option value="" disabled selected>choose one</option>' +
    Object.entries(groups).map(([great, cats]) => `<optgroup label="${esc(great)}">` +
      cats.map((c) => `<option>${esc(c)}</option>`).join('') + '</optgroup>').join('');
  $('category').addEventListener('change', () => { document.querySelector('input[value=category]').checked = true; });
  const samples = await (await fetch('/samples')).json();
  $('samples').innerHTML = samples.map((s) => `<img src="/samples/${s}" title="${s}" data-name="${s}">`).join('');
  for (const el of $('samples').querySelectorAll('img')) {
    el.addEventListener('click', async () => load(await (await fetch(el.src)).blob()));
  }
}

function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c])); }

$('go').addEventListener('click', async () => {
  const form = new FormData();
  form.append('image', blob, 'query.jpg');
  form.append('k', '24');
  if (mode() === 'category') {
    if (!$('category').value) { $('status').textContent = 'Choose a category first.'; return; }
    form.append('category', $('category').value);
  }
  if (mode() === 'box') {
    if (!box || box[2] < 2 || box[3] < 2) { $('status').textContent = 'Draw a rectangle on the photo first.'; return; }
    form.append('box', box.map((v) => Math.round(v)).join(','));
  }
  $('status').textContent = 'Searching...';
  const r = await fetch('/search', { method: 'POST', body: form });
  const d = await r.json();
  if (!r.ok) { $('status').textContent = 'Error: ' + d.error; return; }
  roi = d.roi; draw();
  const total = d.timings_ms.total;
  $('status').textContent = `${d.results.length} results in ${total.toFixed(0)} ms; category ${d.category} (${d.category_source}); ` +
    `ROI from ${d.roi_source}` + (d.relaxed.length ? `; relaxed ${d.relaxed.join(', ')}` : '') +
    (d.widened.length ? `; widened past ${d.widened.join(', ')}` : '') +
    (d.hedged ? `; also searched ${d.hedged.split('=')[1]}` : '') +
    (d.partial ? `; PARTIAL: ${d.missing_shards.join(', ')} did not answer, their items are missing` : '');
  const read = d.attributes.filter((a) => a.token.split('=')[1] !== 'other');   // in the items' tag order
  read.sort((a, b) => fieldRank(a.token.split('=')[0]) - fieldRank(b.token.split('=')[0]));
  $('tags').innerHTML = read.map((a) =>
    `<span class="${a.probability < 0.5 ? 'weak' : ''}" data-field="${esc(a.token.split('=')[0])}" ` +
    `title="p=${a.probability.toFixed(2)}">#${esc(a.token.split('=')[1])}</span>`).join('');
  showHits(d.results);
});

// An item's tokens as a shopper reads them: the telling fields first, a field's several values
// (the close runners-up an item is indexed under too) as one tag, a value two fields share
// (articleType=Ties, subCategory=Ties) once, and the taxonomy's "other" bucket left out.
// Fields this list does not name (another catalog's taxonomy) follow, in their own order.
const FIELD_ORDER = ['articleType', 'gender', 'baseColour', 'usage', 'season', 'subCategory', 'masterCategory'];
const fieldRank = (f) => (FIELD_ORDER.includes(f) ? FIELD_ORDER.indexOf(f) : FIELD_ORDER.length);
function hashtags(tokens) {
  const byField = new Map();
  for (const t of tokens) {
    const i = t.indexOf('=');
    const field = t.slice(0, i), value = t.slice(i + 1);
    if (value === 'other') continue;
    if (!byField.has(field)) byField.set(field, []);
    byField.get(field).push(value);
  }
  const seen = new Set(), tags = [];
  for (const field of [...byField.keys()].sort((a, b) => fieldRank(a) - fieldRank(b))) {
    const values = byField.get(field).filter((v) => !seen.has(v));
    values.forEach((v) => seen.add(v));
    if (values.length) tags.push('#' + values.join('/'));
  }
  return tags;
}

const TILE_SIDE = 2 * 160;   // a tile's photo: ~160 px wide, twice that for high-density screens

// Each hit offers the catalog items that look like it (GET /items/{id}/similar: no photo sent).
// A hit of a search has a score; an item of the catalog's pages has none. `append`: below the others.
function showHits(results, append) {
  if (!append) $('more').style.display = 'none';
  const html = results.map((h) => `<div class="hit"><img src="${h.image_url}?max_side=${TILE_SIDE}" loading="lazy">
      <div>${esc(h.title || h.id)}</div>` +
      (h.score === undefined ? '' : `<div>score ${h.score.toFixed(3)} &middot; ham ${h.hamming}</div>`) +
      `<div class="m">${hashtags(h.matched).map(esc).join(' ')}</div>
      <a href="#" class="similar" data-id="${esc(h.id)}" data-title="${esc(h.title || h.id)}">similar items</a></div>`).join('');
  if (append) $('grid').insertAdjacentHTML('beforeend', html); else $('grid').innerHTML = html;
  for (const a of $('grid').querySelectorAll('a.similar:not([data-bound])')) {
    a.dataset.bound = '1';
    a.addEventListener('click', async (e) => { e.preventDefault(); similar(a.dataset.id, a.dataset.title); });
  }
}

// The catalog a page at a time (GET /items), in the index's own order; "More" asks for the next page.

// With "category" chosen under "How to look", only that category's items.
let cursor = null, browsed = 0, browsing = '';

async function browse(more) {
  if (!more) {
    cursor = null; browsed = 0; $('grid').innerHTML = ''; $('tags').innerHTML = '';
    browsing = mode() === 'category' ? $('category').value : '';
  }
  const r = await fetch('/items?limit=20' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '') +
                        (browsing ? '&filters=' + encodeURIComponent('articleType=' + browsing) : ''));
  const d = await r.json();
  if (!r.ok) { $('status').textContent = 'Error: ' + d.error; return; }
  cursor = d.next_cursor; browsed += d.items.length;
  $('status').textContent = `the catalog${browsing ? ', ' + browsing : ''}: ${browsed} items shown` +
    (cursor ? '' : ', all of them');
  showHits(d.items.map((it) => ({id: it.id, title: it.meta.title, image_url: it.image_url, matched: it.attributes})), more);
  $('more').style.display = cursor ? 'block' : 'none';
}
$('browse').addEventListener('click', () => browse(false));
$('more').addEventListener('click', () => browse(true));

async function similar(id, title) {
  $('status').textContent = `Looking for items like ${title}...`;
  const r = await fetch(`/items/${encodeURIComponent(id)}/similar?k=24`);
  const d = await r.json();
  if (!r.ok) { $('status').textContent = 'Error: ' + d.error; return; }
  $('status').textContent = `${d.results.length} items like ${title}` +
    (d.relaxed.length ? `; relaxed ${d.relaxed.join(', ')}` : '') +
    (d.partial ? `; PARTIAL: ${d.missing_shards.join(', ')} did not answer, their items are missing` : '');
  $('tags').innerHTML = hashtags(d.attributes).map((t) => `<span>${esc(t)}</span>`).join('');
  showHits(d.results);
}

init();
