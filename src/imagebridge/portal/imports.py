"""``/portal/import``: bring images from a CD, DVD, USB stick or a zip into the archive from a browser.

Drag a folder (a copied disc), a zip, an ISO image or DICOM files onto the page, or pick them.
A folder or loose files are packed in the browser into a zip (STORED, built as a Blob of slices of
the picked files, so nothing large is held in memory). The file goes up in 8 MiB chunks through
``/api/uploads`` with a progress bar; after a reload, picking the same file again resumes where
the upload stopped (the page remembers the upload id by the file's name, size and date). When
the bytes are in, the import runs and the page lists the studies found and each one's decision.
``/portal/import/{id}`` shows that result again later.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from imagebridge.errors import ImageBridgeError, NotFound
from imagebridge.fhir.index import FhirIndex
from imagebridge.index.schema import fhir_patient_ids
from imagebridge.media.uploads import COMPLETE, FAILED, REVIEW, Upload, Uploads, run_import
from imagebridge.portal import layout
from imagebridge.portal.layout import esc
from imagebridge.portal.session import Session, SignedIn, check_csrf
from imagebridge.services.archive import Archive

router = APIRouter(include_in_schema=False)
STAFF_ROLES = ("clinician", "admin")


@router.get("/portal/imports")
async def imports_alias() -> Response:
    return RedirectResponse("/portal/import", status_code=307)


@router.get("/portal/import")
async def import_page(request: Request, session: SignedIn) -> Response:
    staff = session.role in STAFF_ROLES
    archive: Archive = request.app.state.archive
    waiting = await run_in_threadpool(_waiting, archive) if staff else ""
    if not staff and (session.user is None or len(session.user.patients) != 1):
        return layout.response(
            "Import images",
            "<h1>Import images from a disc or a zip</h1>"
            + layout.alert(
                "This account acts for several patients, so it cannot upload images here. "
                "Ask the imaging department to import the disc for the right person."
            ),
            nav=layout.nav_for(session.role, current="/portal/imports"),
            who=session.display_name,
            csrf=session.csrf,
        )
    source = (
        layout.field(
            "source",
            "Source (optional)",
            hint="The outside organisation the disc comes from ('imagebridge source list'); "
            "naming it matches each patient to ours.",
        )
        if staff
        else ""
    )
    who = "staff" if staff else "patient"
    body = (
        "<h1>Import images from a disc or a zip</h1>"
        + layout.next_step(
            "Drag the folder of a CD, DVD or USB stick (or a zip or ISO file) onto the box below, "
            "or press a button to pick it. Large uploads continue where they stopped if you pick "
            "the same file again after a reload."
        )
        + (
            ""
            if staff
            else await run_in_threadpool(
                _what_happens, archive, session.user.patients[0] if session.user else ""
            )
        )
        + f'<div class="card" id="drop" data-csrf="{esc(session.csrf)}" data-who="{who}">'
        + "<p><strong>Drop a folder, zip or ISO file here</strong></p>"
        + '<label for="pick-file">Pick a zip, ISO or DICOM file</label>'
        + '<input type="file" id="pick-file" accept=".zip,.iso,.dcm,application/zip,application/dicom">'
        + '<label for="pick-folder">Or pick a folder</label>'
        + '<input type="file" id="pick-folder" webkitdirectory multiple>'
        + source
        + "</div>"
        + '<div class="card"><label for="progress">Upload progress</label>'
        + '<progress id="progress" max="100" value="0" style="width:100%;height:1.5rem"></progress>'
        + '<p id="status" role="status" aria-live="polite" class="muted">Nothing uploaded yet.</p></div>'
        + '<div id="result" aria-live="polite"></div>'
        + waiting
    )
    return layout.response(
        "Import images",
        body,
        nav=layout.nav_for(session.role, current="/portal/imports"),
        who=session.display_name,
        csrf=session.csrf,
        script=SCRIPT,
    )


@router.get("/portal/import/{upload_id}")
async def result_page(request: Request, upload_id: str, session: SignedIn) -> Response:
    try:
        upload = await run_in_threadpool(_visible, request.app.state.archive, session, upload_id)
    except NotFound:
        return layout.problem(
            "Upload not found", "There is no such upload.", ("/portal/import", "Import images"), status=404
        )
    body = f"<h1>Import of {esc(upload.name)}</h1>" + result_html(upload)
    if session.role in STAFF_ROLES and upload.state in (REVIEW, COMPLETE, FAILED):
        body += _import_form(upload, session.csrf)
    body += '<p><a class="button secondary" href="/portal/import">Import more</a></p>'
    return layout.response(
        "Import result",
        body,
        nav=layout.nav_for(session.role, current="/portal/imports"),
        who=session.display_name,
        csrf=session.csrf,
    )


@router.post("/portal/import/{upload_id}/import")
async def import_now(request: Request, upload_id: str, session: SignedIn) -> Response:
    """Staff file an upload that waits (a patient's, or one not imported yet), naming its source."""
    form = await check_csrf(request, session)
    if session.role not in STAFF_ROLES:
        return layout.problem("Not allowed", "Only staff import uploads for others.", status=403)
    archive = request.app.state.archive
    source = form.get("source", "").strip() or None
    try:
        await run_in_threadpool(_visible, archive, session, upload_id)
    except NotFound:
        return layout.problem(
            "Upload not found", "There is no such upload.", ("/portal/import", "Import images"), status=404
        )
    uploads = Uploads(archive.engine, archive.settings.data_dir)
    try:
        actor = f"user:{session.user.username}" if session.user else None
        await run_in_threadpool(
            lambda: run_import(archive, uploads, upload_id, staff=True, source=source, actor=actor)
        )
    except ImageBridgeError as exc:
        back = (f"/portal/import/{upload_id}", "Back to the upload")
        return layout.problem("The import did not run", exc.reason, back, status=409)
    return RedirectResponse(f"/portal/import/{upload_id}", status_code=303)


def _what_happens(archive: Archive, patient: str) -> str:
    """What becomes of a patient's upload, told before she sends it (``media.uploads`` decides)."""
    found = FhirIndex(archive.engine).patients([fhir_patient_ids.c.fhir_id == patient]) if patient else []
    if found:
        me = found[0]
        named = f"your Patient ID here, <strong>{esc(me.patient_id)}</strong>" + (
            f" (issued by <strong>{esc(me.issuer)}</strong>)" if me.issuer else ""
        )
    else:
        named = "your Patient ID at this hospital"
    if archive.settings.replace_on_conflict:
        first = (
            "<li>On this server <strong>every</strong> study you upload waits for staff to check it "
            "before it joins your record.</li>"
        )
    else:
        first = (
            f"<li>Studies on the disc that name you exactly by {named} are added to your record "
            "as soon as the upload finishes.</li>"
            "<li>Every other study (from another hospital, or naming anyone else) waits for staff to "
            "check it. Until then it is in nobody's record and not in your study list; staff decide "
            "whose record it belongs to.</li>"
        )
    return (
        '<div class="card"><h2>What happens to your upload</h2><ul>'
        + first
        + "<li>Nothing from your upload is ever added to another person's record without a staff "
        "check.</li>"
        "<li>After the upload you see each study and what was decided for it. Studies added to your "
        'record are listed under <a href="/portal/access-log">Who saw my images</a>.</li>'
        "<li>An upload you do not finish is removed after 7 days.</li>"
        "</ul></div>"
    )


def _import_form(upload: Upload, csrf: str) -> str:
    fields = layout.field(
        "source",
        "Source",
        hint="The outside organisation the images come from ('imagebridge source list'); "
        "leave empty to file them as they are.",
    )
    return (
        '<div class="card"><h2>File these studies</h2>'
        + layout.form(
            f"/portal/import/{upload.upload_id}/import",
            csrf,
            fields + layout.button("Import now"),
            label="Import now",
        )
        + "</div>"
    )


def _waiting(archive: Archive) -> str:
    """Staff's list of uploads that wait for them (patients' uploads, mostly)."""
    found = [u for u in Uploads(archive.engine, archive.settings.data_dir).list() if u.state == REVIEW]
    if not found:
        return ""
    rows = [
        [
            f'<a href="/portal/import/{esc(u.upload_id)}">{esc(u.name)}</a>',
            esc(u.owner.split(":", 1)[-1]),
            esc(u.updated_at.strftime("%Y-%m-%d %H:%M")),
            esc(len((u.result or {}).get("studies", []))),
        ]
        for u in found
    ]
    table = layout.table(["Upload", "From", "When", "Studies"], rows, caption="Uploads waiting for review")
    return f'<div class="card">{table}</div>'


def _visible(archive: Archive, session: Session, upload_id: str) -> Upload:
    """The upload, if this person may see it: their own, or any for staff."""
    upload = Uploads(archive.engine, archive.settings.data_dir).get(upload_id)
    mine = session.user is not None and upload.owner == f"user:{session.user.username}"
    if not mine and session.role not in STAFF_ROLES:
        raise NotFound("no such upload")
    return upload


def result_html(upload: Upload) -> str:
    """The studies found and what happened to each, as the API returned it."""
    result: dict[str, Any] = upload.result or {}
    if not result:
        state = {"receiving": f"uploading: {upload.received} of {upload.size} bytes"}.get(
            upload.state, upload.state
        )
        return layout.alert(f"Not imported yet ({state}).", "muted")
    if "error" in result:
        return layout.alert(f"The import failed: {result['error']}")
    skipped = len(result.get("skipped", []))
    counts = (
        f"{result.get('stored', 0)} stored, {result.get('already_present', 0)} already here, "
        f"{result.get('waiting_review', 0)} waiting for review, {len(result.get('refused', []))} refused, "
        f"{skipped} {'file' if skipped == 1 else 'files'} skipped"
    )
    rows = [
        [
            esc(_person(s["patient_name"])) + f"<br><small>ID {esc(s['patient_id'])}</small>",
            esc(_date(s["date"])),
            esc(s["description"]),
            esc(", ".join(s["modalities"])),
            esc(s["instances"]),
            esc(s["decision"]),
        ]
        for s in result.get("studies", [])
    ]
    waiting = result.get("waiting_review", 0)
    html = layout.next_step(
        "Staff check these studies before they join the record; nothing more to do here."
        if waiting
        else "Open the studies from the study list, or import another disc."
    )
    html += layout.alert(counts, "ok") + layout.table(
        ["Patient", "Date", "Description", "Modality", "Images", "Decision"], rows, caption="Studies found"
    )
    reasons = result.get("skipped_by_reason", {})
    if reasons:
        html += layout.table(
            ["Skipped because", "Files"],
            [[esc(k), esc(v)] for k, v in reasons.items()],
            caption="Skipped files",
        )
    for note in result.get("notes", []):
        html += f'<p class="muted">{esc(note)}</p>'
    return html


def _person(value: str) -> str:
    """PS3.5 §6.2 ``Family^Given^Middle`` as people write it: ``Given Middle Family``."""
    family, _, rest = str(value or "").split("=")[0].partition("^")
    given = " ".join(part for part in rest.split("^")[:2] if part)
    return " ".join(part for part in (given, family) if part) or "(no name)"


def _date(value: str) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


SCRIPT = r"""
(function(){
const drop=document.getElementById('drop'),csrf=drop.dataset.csrf,staff=drop.dataset.who==='staff';
const bar=document.getElementById('progress'),status=document.getElementById('status');
const CHUNK=8*1024*1024;
const say=t=>{status.textContent=t;};
const mb=n=>(n/1048576).toFixed(1);
async function call(method,url,body,headers){
  const r=await fetch(url,{method,credentials:'same-origin',body,
    headers:Object.assign({'X-CSRF-Token':csrf},headers||{})});
  let j=null;try{j=await r.json();}catch(e){}
  return {r,j};
}
const T=new Uint32Array(256);
for(let n=0;n<256;n++){let c=n;for(let k=0;k<8;k++)c=c&1?0xEDB88320^(c>>>1):c>>>1;T[n]=c>>>0;}
async function crc(file){
  let c=0xFFFFFFFF;
  for(let o=0;o<file.size;o+=4194304){
    const b=new Uint8Array(await file.slice(o,o+4194304).arrayBuffer());
    for(let i=0;i<b.length;i++)c=T[(c^b[i])&255]^(c>>>8);
  }
  return (c^0xFFFFFFFF)>>>0;
}
function le(v,n){const a=new Uint8Array(n);for(let i=0;i<n;i++){a[i]=v&255;v=Math.floor(v/256);}return a;}
function cat(parts){let n=0;for(const p of parts)n+=p.length;const o=new Uint8Array(n);let i=0;
  for(const p of parts){o.set(p,i);i+=p.length;}return o;}
async function pack(files){
  // A STORED zip (PKWARE APPNOTE 4.3) as a Blob of the picked files' own slices.
  const parts=[],central=[];let offset=0,done=0;
  for(const [path,file] of files){
    say('Preparing '+(++done)+' of '+files.length+' files');
    const name=new TextEncoder().encode(path),sum=await crc(file);
    const head=cat([le(0x04034b50,4),le(20,2),le(0x800,2),le(0,2),le(0,2),le(33,2),le(sum,4),
      le(file.size,4),le(file.size,4),le(name.length,2),le(0,2),name]);
    central.push(cat([le(0x02014b50,4),le(20,2),le(20,2),le(0x800,2),le(0,2),le(0,2),le(33,2),le(sum,4),
      le(file.size,4),le(file.size,4),le(name.length,2),le(0,2),le(0,2),le(0,2),le(0,2),le(0,4),
      le(offset,4),name]));
    parts.push(head,file);offset+=head.length+file.size;
  }
  const dir=cat(central);
  if(offset+dir.length>=4294967295||files.length>=65535)
    throw new Error('This folder is too large to pack here; make a zip or ISO file of it and upload that.');
  parts.push(dir,cat([le(0x06054b50,4),le(0,2),le(0,2),le(files.length,2),le(files.length,2),
    le(dir.length,4),le(offset,4),le(0,2)]));
  return new Blob(parts,{type:'application/zip'});
}
async function offsetOf(id){
  const h=await fetch('/api/uploads/'+id,{method:'HEAD',credentials:'same-origin'});
  return h.ok?Number(h.headers.get('Upload-Offset')):null;
}
async function send(blob,name,key){
  let id=localStorage.getItem(key),offset=id?await offsetOf(id):null;
  if(offset===null){
    const {r,j}=await call('POST','/api/uploads',JSON.stringify({name:name,size:blob.size}),
      {'Content-Type':'application/json'});
    if(!r.ok)throw new Error(j&&j.error||r.statusText);
    id=j.id;offset=0;localStorage.setItem(key,id);
  }else if(offset>0){say('Resuming '+name+' at '+mb(offset)+' MB');}
  let tries=0;
  while(offset<blob.size){
    bar.value=100*offset/blob.size;
    say('Uploading '+name+': '+mb(offset)+' of '+mb(blob.size)+' MB');
    try{
      const {r,j}=await call('PATCH','/api/uploads/'+id,blob.slice(offset,offset+CHUNK),
        {'Upload-Offset':String(offset),'Content-Type':'application/octet-stream'});
      if(r.status===409&&j&&typeof j.offset==='number'){offset=j.offset;continue;}
      if(!r.ok)throw new Error(j&&j.error||r.statusText);
      offset=j.offset;tries=0;
    }catch(e){
      if(++tries>5)throw e;
      say('Connection problem; trying again ('+tries+')');
      await new Promise(ok=>setTimeout(ok,1000*tries));
      const now=await offsetOf(id);if(now!==null)offset=now;
    }
  }
  bar.value=100;return id;
}
async function go(files,folder){
  try{
    let blob,name,key;
    if(files.length===1&&!folder){
      const f=files[0][1];blob=f;name=f.name;key='ib-upload:'+f.name+':'+f.size+':'+f.lastModified;
    }else{
      files.sort((a,b)=>a[0]<b[0]?-1:a[0]>b[0]?1:0);
      blob=await pack(files);name=(folder||'files')+'.zip';
      key='ib-upload:'+name+':'+blob.size+':'+Math.max(...files.map(x=>x[1].lastModified));
    }
    const id=await send(blob,name,key);
    say('Upload complete. Importing '+name+'…');
    const field=document.getElementById('f-source'),source=staff&&field&&field.value.trim();
    const {r,j}=await call('POST','/api/uploads/'+id+'/import',JSON.stringify(source?{source:source}:{}),
      {'Content-Type':'application/json'});
    if(!r.ok&&r.status!==409)throw new Error(j&&j.error||r.statusText);
    localStorage.removeItem(key);
    location.assign('/portal/import/'+encodeURIComponent(id));
  }catch(e){say('The upload stopped: '+e.message+' Pick the same file again to continue.');}
}
async function walk(entry,prefix,out){
  if(entry.isFile){out.push([prefix+entry.name,await new Promise((ok,no)=>entry.file(ok,no))]);return;}
  if(!entry.isDirectory)return;
  const reader=entry.createReader();let batch;
  do{batch=await new Promise((ok,no)=>reader.readEntries(ok,no));
    for(const child of batch)await walk(child,prefix+entry.name+'/',out);}while(batch.length);
}
drop.addEventListener('dragover',e=>{e.preventDefault();drop.style.outline='3px dashed #0b57d0';});
drop.addEventListener('dragleave',()=>{drop.style.outline='';});
drop.addEventListener('drop',async e=>{
  e.preventDefault();drop.style.outline='';
  const entries=[...e.dataTransfer.items].map(i=>i.webkitGetAsEntry&&i.webkitGetAsEntry()).filter(Boolean);
  const files=[];for(const en of entries)await walk(en,'',files);
  const folder=entries.length===1&&entries[0].isDirectory?entries[0].name:(files.length>1?'files':null);
  if(files.length)go(files,folder);
});
document.getElementById('pick-file').addEventListener('change',e=>{
  const f=e.target.files[0];if(f)go([[f.name,f]],null);});
document.getElementById('pick-folder').addEventListener('change',e=>{
  const list=[...e.target.files];if(!list.length)return;
  go(list.map(f=>[f.webkitRelativePath||f.name,f]),(list[0].webkitRelativePath||'folder').split('/')[0]);});
})();
"""
