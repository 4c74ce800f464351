-- mediastream.lua: Wireshark/tshark dissector for the streamlab media-stream
-- protocol (UDP). Tested with Wireshark/tshark 4.0 (Lua 5.2).
--
-- Load it for one run:   tshark -X lua_script:captures/mediastream.lua -r run.pcapng
-- or copy it into the personal Lua plugins folder (see `tshark -G folders`).
--
-- Wire layout (all integers big-endian):
--   common header (12 B): 0 u8 type, 1 u8 version (1), 2 u16 flags, 4 u64 stream_id
--   START(1) / START_ACK(2) / START_CONFIRM(3): 12 u16 ext_len, 14.. TLVs; length = 14 + ext_len
--   ERROR(4): 12 u16 code, 14 u8 reason_len, 15.. reason (UTF-8), u16 ext_len, TLVs;
--             length = 17 + reason_len + ext_len
--   DATA(16): 12 u32 seq, 16 u16 index, 18 u16 count, 20 u64 timestamp_us, 28.. payload (>= 1 B)
--   TLV: u16 type, u16 len, value; the TLVs exactly fill ext_len.
--
-- Registered on UDP port 4444 only. Traffic on other ports is decoded with
-- decode-as (`-d udp.port==P,mediastream`; every streamlab capture names the
-- ports in its section comment), or by the heuristic, which is OFF unless
-- the preference is set (`-o mediastream.heuristic:TRUE`), so that another
-- protocol's datagrams are never taken for media-stream frames. Malformed
-- frames are reported as expert info (group Malformed, severity Error:
-- field mediastream.malformed); the dissector never raises a Lua error on
-- any input.

local ms = Proto("mediastream", "streamlab media stream")
ms.prefs.heuristic = Pref.bool("Heuristic on any UDP port", false,
  "Also try frames on any UDP port that pass a strict check (known type, version 1, exact length)")

local PORT = 4444
local VERSION = 1
local COMMON_LEN = 12
local CONTROL_MIN = 14
local ERROR_MIN = 17
local DATA_HEADER = 28

local T_START, T_START_ACK, T_START_CONFIRM, T_ERROR, T_DATA = 1, 2, 3, 4, 16

local type_names = {
  [T_START] = "START",
  [T_START_ACK] = "START_ACK",
  [T_START_CONFIRM] = "START_CONFIRM",
  [T_ERROR] = "ERROR",
  [T_DATA] = "DATA",
}

local error_names = {
  [1] = "MALFORMED_FRAME",
  [2] = "UNSUPPORTED_VERSION",
  [3] = "STREAM_ID_MISMATCH",
  [4] = "UNEXPECTED_FRAME",
  [5] = "BUSY",
  [6] = "NO_SESSION",
  [7] = "HANDSHAKE_TIMEOUT",
  [8] = "ABORTED",
}

local tlv_names = { [0x0001] = "PADDING" }

local FLAG_ACK_REQUIRED = 0x0001
local FLAG_IMMEDIATE = 0x0002

local f = {
  type = ProtoField.uint8("mediastream.type", "Frame type", base.DEC, type_names),
  version = ProtoField.uint8("mediastream.version", "Version", base.DEC),
  flags = ProtoField.uint16("mediastream.flags", "Flags", base.HEX),
  flag_ack = ProtoField.bool("mediastream.flags.ack_required", "ACK_REQUIRED", 16, nil, FLAG_ACK_REQUIRED),
  flag_immediate = ProtoField.bool("mediastream.flags.immediate", "IMMEDIATE", 16, nil, FLAG_IMMEDIATE),
  flag_reserved = ProtoField.uint16("mediastream.flags.reserved", "Reserved", base.HEX, nil, 0xfffc),
  stream_id = ProtoField.uint64("mediastream.stream_id", "Stream ID", base.HEX),
  ext_len = ProtoField.uint16("mediastream.ext_len", "Extension length", base.DEC),
  tlv = ProtoField.bytes("mediastream.tlv", "TLV"),
  tlv_type = ProtoField.uint16("mediastream.tlv.type", "TLV type", base.HEX, tlv_names),
  tlv_len = ProtoField.uint16("mediastream.tlv.len", "TLV length", base.DEC),
  tlv_value = ProtoField.bytes("mediastream.tlv.value", "TLV value"),
  error_code = ProtoField.uint16("mediastream.error.code", "Error code", base.DEC, error_names),
  reason_len = ProtoField.uint8("mediastream.error.reason_len", "Reason length", base.DEC),
  reason = ProtoField.string("mediastream.error.reason", "Reason"),
  seq = ProtoField.uint32("mediastream.seq", "Sequence (frame number)", base.DEC),
  index = ProtoField.uint16("mediastream.index", "Index (datagram within frame)", base.DEC),
  count = ProtoField.uint16("mediastream.count", "Count (datagrams in frame)", base.DEC),
  timestamp_us = ProtoField.uint64("mediastream.timestamp_us", "Timestamp (us)", base.DEC),
  payload = ProtoField.bytes("mediastream.payload", "Payload"),
  payload_len = ProtoField.uint32("mediastream.payload_len", "Payload length", base.DEC),
  payload_offset = ProtoField.uint32("mediastream.payload_offset", "Payload offset within frame", base.DEC),
  payload_ok = ProtoField.bool("mediastream.payload_ok", "Payload matches the test pattern"),
}

ms.fields = {
  f.type, f.version, f.flags, f.flag_ack, f.flag_immediate, f.flag_reserved, f.stream_id,
  f.ext_len, f.tlv, f.tlv_type, f.tlv_len, f.tlv_value, f.error_code, f.reason_len, f.reason,
  f.seq, f.index, f.count, f.timestamp_us, f.payload, f.payload_len, f.payload_offset, f.payload_ok,
}

local e_malformed = ProtoExpert.new("mediastream.malformed", "Malformed mediastream frame",
  expert.group.MALFORMED, expert.severity.ERROR)
local e_payload = ProtoExpert.new("mediastream.payload_mismatch",
  "Payload does not match the test pattern", expert.group.PROTOCOL, expert.severity.WARN)
ms.experts = { e_malformed, e_payload }

-- Payload size of index-0 datagrams, by "<stream id hex>/<seq>", used to
-- infer the offset of later datagrams of the same frame.
local first_sizes = {}
function ms.init()
  first_sizes = {}
end

local function flag_text(flags)
  local names = {}
  if bit32.band(flags, FLAG_ACK_REQUIRED) ~= 0 then names[#names + 1] = "ACK_REQUIRED" end
  if bit32.band(flags, FLAG_IMMEDIATE) ~= 0 then names[#names + 1] = "IMMEDIATE" end
  local rest = bit32.band(flags, 0xfffc)
  if rest ~= 0 then names[#names + 1] = string.format("0x%04x", rest) end
  if #names == 0 then return "none" end
  return table.concat(names, "|")
end

-- Expected byte at offset o of a frame's payload: the little-endian u16
-- counter floor(o/2) mod 65536.
local function pattern_byte(o)
  local counter = math.floor(o / 2) % 65536
  if o % 2 == 0 then return counter % 256 end
  return math.floor(counter / 256)
end

-- Dissects the TLV area [off, off+len). Returns true when the TLVs exactly
-- fill it.
local function dissect_tlvs(tvb, tree, off, len)
  local stop = off + len
  while off < stop do
    if stop - off < 4 then
      tree:add_proto_expert_info(e_malformed,
        string.format("TLV header truncated: %d bytes left in the extension area, need 4", stop - off))
      return false
    end
    local t = tvb(off, 2):uint()
    local l = tvb(off + 2, 2):uint()
    if off + 4 + l > stop then
      local item = tree:add(f.tlv, tvb(off, stop - off))
      item:add(f.tlv_type, tvb(off, 2))
      item:add(f.tlv_len, tvb(off + 2, 2))
      item:add_proto_expert_info(e_malformed,
        string.format("TLV value overruns the extension area: len %d, %d bytes left", l, stop - off - 4))
      return false
    end
    local item = tree:add(f.tlv, tvb(off, 4 + l))
    item:set_text(string.format("TLV %s (0x%04x), %d bytes", tlv_names[t] or "unknown", t, l))
    item:add(f.tlv_type, tvb(off, 2))
    item:add(f.tlv_len, tvb(off + 2, 2))
    if l > 0 then item:add(f.tlv_value, tvb(off + 4, l)) end
    off = off + 4 + l
  end
  return true
end

-- Dissects one datagram. Returns (info text, malformed?) after filling the
-- tree; never reads outside the tvb.
local function dissect_frame(tvb, pinfo, tree)
  local len = tvb:len()
  local function bad(msg)
    tree:add_proto_expert_info(e_malformed, msg)
    return msg
  end

  if len < COMMON_LEN then
    if len >= 1 then tree:add(f.type, tvb(0, 1)) end
    if len >= 2 then tree:add(f.version, tvb(1, 1)) end
    return "truncated", bad(string.format("Truncated: %d bytes, the common header needs %d", len, COMMON_LEN))
  end

  local ftype = tvb(0, 1):uint()
  local version = tvb(1, 1):uint()
  local flags = tvb(2, 2):uint()
  local sid = tvb(4, 8):uint64()
  local sid_text = "0x" .. sid:tohex()
  local name = type_names[ftype] or string.format("UNKNOWN(%d)", ftype)

  tree:add(f.type, tvb(0, 1))
  local vitem = tree:add(f.version, tvb(1, 1))
  local fitem = tree:add(f.flags, tvb(2, 2))
  fitem:append_text(" (" .. flag_text(flags) .. ")")
  fitem:add(f.flag_ack, tvb(2, 2))
  fitem:add(f.flag_immediate, tvb(2, 2))
  fitem:add(f.flag_reserved, tvb(2, 2))
  tree:add(f.stream_id, tvb(4, 8))

  if version ~= VERSION then
    vitem:add_proto_expert_info(e_malformed, string.format("Unsupported version %d (expected %d)", version, VERSION))
    return string.format("%s sid=%s version=%d", name, sid_text, version), "bad version"
  end
  if type_names[ftype] == nil then
    return string.format("%s sid=%s", name, sid_text), bad(string.format("Unknown frame type %d", ftype))
  end

  if ftype == T_DATA then
    local info = string.format("DATA sid=%s", sid_text)
    if len < DATA_HEADER + 1 then
      return info, bad(string.format("Truncated DATA: %d bytes, need at least %d", len, DATA_HEADER + 1))
    end
    local seq = tvb(12, 4):uint()
    local index = tvb(16, 2):uint()
    local count = tvb(18, 2):uint()
    tree:add(f.seq, tvb(12, 4))
    local iitem = tree:add(f.index, tvb(16, 2))
    tree:add(f.count, tvb(18, 2))
    tree:add(f.timestamp_us, tvb(20, 8))
    local plen = len - DATA_HEADER
    local pitem = tree:add(f.payload, tvb(DATA_HEADER, plen))
    tree:add(f.payload_len, plen):set_generated()
    info = string.format("DATA seq=%d %d/%d sid=%s len=%d", seq, index, count, sid_text, plen)
    local malformed = nil
    if index >= count then
      malformed = string.format("Index %d is not below count %d", index, count)
      iitem:add_proto_expert_info(e_malformed, malformed)
    end
    -- Payload pattern: offset is known for index 0, and for index k when
    -- the payload size of index 0 of the same frame has been seen.
    local key = sid_text .. "/" .. seq
    local offset = nil
    if index == 0 then
      offset = 0
      if count > 1 and not pinfo.visited then first_sizes[key] = plen end
    elseif first_sizes[key] ~= nil then
      offset = index * first_sizes[key]
    end
    if offset ~= nil and not malformed then
      local bytes = tvb(DATA_HEADER, plen):bytes()
      local first_bad = nil
      for i = 0, plen - 1 do
        if bytes:get_index(i) ~= pattern_byte(offset + i) then
          first_bad = i
          break
        end
      end
      tree:add(f.payload_offset, offset):set_generated()
      local okitem = tree:add(f.payload_ok, first_bad == nil):set_generated()
      if first_bad ~= nil then
        okitem:add_proto_expert_info(e_payload, string.format(
          "Payload byte %d (frame offset %d) is 0x%02x, pattern says 0x%02x",
          first_bad, offset + first_bad, bytes:get_index(first_bad), pattern_byte(offset + first_bad)))
        info = info .. " [pattern mismatch]"
      end
    end
    return info, malformed
  end

  if ftype == T_ERROR then
    local info = string.format("ERROR sid=%s", sid_text)
    if len < ERROR_MIN then
      return info, bad(string.format("Truncated ERROR: %d bytes, need at least %d", len, ERROR_MIN))
    end
    local code = tvb(12, 2):uint()
    local rlen = tvb(14, 1):uint()
    tree:add(f.error_code, tvb(12, 2))
    tree:add(f.reason_len, tvb(14, 1))
    info = string.format("ERROR sid=%s code=%s", sid_text, error_names[code] or tostring(code))
    if len < ERROR_MIN + rlen then
      if len > 15 then tree:add(f.reason, tvb(15, len - 15)) end
      return info, bad(string.format("Truncated ERROR: reason_len %d needs %d bytes, have %d", rlen, ERROR_MIN + rlen, len))
    end
    if rlen > 0 then
      local r = tvb(15, rlen)
      tree:add(f.reason, r, r:string(ENC_UTF_8))
      info = info .. string.format(" reason=%q", r:string(ENC_UTF_8))
    end
    local eoff = 15 + rlen
    local elen = tvb(eoff, 2):uint()
    local eitem = tree:add(f.ext_len, tvb(eoff, 2))
    local expected = ERROR_MIN + rlen + elen
    if expected ~= len then
      eitem:add_proto_expert_info(e_malformed, string.format(
        "Length mismatch: 17 + reason_len %d + ext_len %d = %d, datagram has %d", rlen, elen, expected, len))
      return info, "length mismatch"
    end
    if not dissect_tlvs(tvb, tree, eoff + 2, elen) then return info, "bad TLV" end
    return info, nil
  end

  -- START, START_ACK, START_CONFIRM
  local info = string.format("%s sid=%s flags=%s", name, sid_text, flag_text(flags))
  if len < CONTROL_MIN then
    return info, bad(string.format("Truncated %s: %d bytes, need at least %d", name, len, CONTROL_MIN))
  end
  local elen = tvb(12, 2):uint()
  local eitem = tree:add(f.ext_len, tvb(12, 2))
  if CONTROL_MIN + elen ~= len then
    eitem:add_proto_expert_info(e_malformed, string.format(
      "Length mismatch: 14 + ext_len %d = %d, datagram has %d", elen, CONTROL_MIN + elen, len))
    return info, "length mismatch"
  end
  if not dissect_tlvs(tvb, tree, CONTROL_MIN, elen) then return info, "bad TLV" end
  return info, nil
end

function ms.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  -- Wireshark's UDP dissector never hands an empty payload to a
  -- subdissector, so an empty datagram (malformed by spec §2.8) shows as
  -- plain UDP "Len=0"; this guard only matters for other callers.
  if len == 0 then return 0 end
  pinfo.cols.protocol = "MEDIASTREAM"
  local subtree = tree:add(ms, tvb())
  local ok, info, malformed = pcall(dissect_frame, tvb, pinfo, subtree)
  if not ok then
    -- Defensive: a bug here must not become a Lua error on the user's screen.
    subtree:add_proto_expert_info(e_malformed, "Dissector error: " .. tostring(info))
    info, malformed = "dissector error", true
  end
  if malformed then
    pinfo.cols.info = "[Malformed] " .. info
  else
    pinfo.cols.info = info
  end
  return len
end

-- Heuristic: a known type, version 1 and a length consistent with the type.
local function heuristic(tvb, pinfo, tree)
  if not ms.prefs.heuristic then return false end
  local len = tvb:len()
  if len < COMMON_LEN then return false end
  local ftype = tvb(0, 1):uint()
  if tvb(1, 1):uint() ~= VERSION then return false end
  if ftype == T_START or ftype == T_START_ACK or ftype == T_START_CONFIRM then
    if len < CONTROL_MIN or CONTROL_MIN + tvb(12, 2):uint() ~= len then return false end
  elseif ftype == T_ERROR then
    if len < ERROR_MIN then return false end
    local rlen = tvb(14, 1):uint()
    if len < ERROR_MIN + rlen then return false end
    if ERROR_MIN + rlen + tvb(15 + rlen, 2):uint() ~= len then return false end
  elseif ftype == T_DATA then
    if len < DATA_HEADER + 1 then return false end
    if tvb(16, 2):uint() >= tvb(18, 2):uint() then return false end
  else
    return false
  end
  ms.dissector(tvb, pinfo, tree)
  return true
end

DissectorTable.get("udp.port"):add(PORT, ms)
ms:register_heuristic("udp", heuristic)
