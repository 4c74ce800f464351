-- msp.lua: Wireshark/tshark dissector for Serval MSP (Mesh Stream Protocol)
-- carried directly in UDP, as streamlab runs it (docs/msp.md). Tested with
-- Wireshark/tshark 4.0 (Lua 5.2).
--
-- Load it for one run:
--   tshark -X lua_script:captures/msp.lua -d udp.port==4000,msp -r run.pcapng
-- or copy it into the personal Lua plugins folder (see `tshark -G folders`).
--
-- Wire layout (multi-byte fields little-endian):
--   0 u8 flags: SHUTDOWN 0x01, ACK 0x02, FIRST 0x04, STOP 0x08
--   1 u16 ack_seq   (every packet but STOP)
--   3 u16 seq       (data packets only)
--   5.. payload     (data packets only; one message)
-- Kinds: STOP = flags carry STOP (the implementation sends 1 byte);
--        ACK = exactly 3 bytes; data = 5 bytes or more (SHUTDOWN when the
--        flag is set, else DATA). 1-2 bytes without STOP, 4 bytes, and more
--        than 1160 bytes (one MDP payload) are malformed.
--
-- MSP has no well-known port: this script registers the protocol for
-- decode-as only (`-d udp.port==P,msp`; every streamlab capture names its
-- ports in its section comment). It claims no port and has no heuristic by
-- default; `-o msp.heuristic:TRUE` enables a weak heuristic (any UDP payload
-- that parses) for exploring captures by hand. Malformed packets are
-- reported as expert info (group Malformed, severity Error; field
-- msp.malformed); the dissector never raises a Lua error on any input.

local msp = Proto("msp", "Serval MSP (Mesh Stream Protocol)")
msp.prefs.heuristic = Pref.bool("Heuristic on any UDP port", false,
  "Also take any UDP payload that parses as MSP (weak: off by default)")

local FLAG_SHUTDOWN, FLAG_ACK, FLAG_FIRST, FLAG_STOP = 0x01, 0x02, 0x04, 0x08
local ACK_LEN, PREAMBLE_LEN, MAX_LEN = 3, 5, 1160

-- Kind numbers (msp.kind), as the harness's classifier names them.
local K_DATA, K_ACK, K_SHUTDOWN, K_STOP = 1, 2, 3, 4
local kind_names = { [K_DATA] = "DATA", [K_ACK] = "ACK", [K_SHUTDOWN] = "SHUTDOWN", [K_STOP] = "STOP" }

local f = {
  kind = ProtoField.uint8("msp.kind", "Kind", base.DEC, kind_names),
  flags = ProtoField.uint8("msp.flags", "Flags", base.HEX),
  flag_shutdown = ProtoField.bool("msp.flags.shutdown", "SHUTDOWN", 8, nil, FLAG_SHUTDOWN),
  flag_ack = ProtoField.bool("msp.flags.ack", "ACK", 8, nil, FLAG_ACK),
  flag_first = ProtoField.bool("msp.flags.first", "FIRST", 8, nil, FLAG_FIRST),
  flag_stop = ProtoField.bool("msp.flags.stop", "STOP", 8, nil, FLAG_STOP),
  flag_unknown = ProtoField.uint8("msp.flags.unknown", "Unknown bits", base.HEX, nil, 0xf0),
  ack_seq = ProtoField.uint16("msp.ack_seq", "Ack seq (last consumed in order)", base.DEC),
  seq = ProtoField.uint16("msp.seq", "Seq", base.DEC),
  payload_len = ProtoField.uint32("msp.payload_len", "Message length", base.DEC),
  payload = ProtoField.bytes("msp.payload", "Message"),
  trailer = ProtoField.bytes("msp.trailer", "Bytes after STOP"),
  malformed = ProtoField.bool("msp.malformed", "Malformed"),
}
msp.fields = {
  f.kind, f.flags, f.flag_shutdown, f.flag_ack, f.flag_first, f.flag_stop, f.flag_unknown,
  f.ack_seq, f.seq, f.payload_len, f.payload, f.trailer, f.malformed,
}

local e_malformed = ProtoExpert.new("msp.malformed.expert", "Malformed MSP packet",
  expert.group.MALFORMED, expert.severity.ERROR)
msp.experts = { e_malformed }

local function flag_text(flags)
  local parts = {}
  if bit32.band(flags, FLAG_SHUTDOWN) ~= 0 then parts[#parts + 1] = "SHUTDOWN" end
  if bit32.band(flags, FLAG_ACK) ~= 0 then parts[#parts + 1] = "ACK" end
  if bit32.band(flags, FLAG_FIRST) ~= 0 then parts[#parts + 1] = "FIRST" end
  if bit32.band(flags, FLAG_STOP) ~= 0 then parts[#parts + 1] = "STOP" end
  if #parts == 0 then return "-" end
  return table.concat(parts, "|")
end

-- Why `len` bytes with `flags` are no MSP packet, or nil.
local function problem(len, flags)
  if len == 0 then return "Empty datagram" end
  if len > MAX_LEN then return string.format("%d bytes exceed the MDP MTU of %d", len, MAX_LEN) end
  if flags ~= nil and bit32.band(flags, FLAG_STOP) ~= 0 then return nil end
  if len < ACK_LEN then return string.format("%d bytes without STOP: an ACK needs 3", len) end
  if len == 4 then return "4 bytes: a data packet needs the 5-byte preamble" end
  return nil
end

local function dissect(tvb, pinfo, tree)
  local len = tvb:len()
  pinfo.cols.protocol = "MSP"
  local subtree = tree:add(msp, tvb(), "Serval MSP")
  if len == 0 then
    subtree:add(f.malformed, true):set_generated()
    subtree:add_proto_expert_info(e_malformed, "Empty datagram")
    pinfo.cols.info = "MSP malformed: empty"
    return 0
  end
  local flags = tvb(0, 1):uint()
  local why = problem(len, flags)
  local fitem = subtree:add(f.flags, tvb(0, 1))
  fitem:append_text(" (" .. flag_text(flags) .. ")")
  fitem:add(f.flag_shutdown, tvb(0, 1))
  fitem:add(f.flag_ack, tvb(0, 1))
  fitem:add(f.flag_first, tvb(0, 1))
  fitem:add(f.flag_stop, tvb(0, 1))
  fitem:add(f.flag_unknown, tvb(0, 1))
  if why ~= nil then
    subtree:add(f.malformed, true):set_generated()
    subtree:add_proto_expert_info(e_malformed, why)
    pinfo.cols.info = "MSP malformed: " .. why
    return len
  end
  local kind
  if bit32.band(flags, FLAG_STOP) ~= 0 then
    kind = K_STOP
    if len > 1 then subtree:add(f.trailer, tvb(1)) end
  elseif len == ACK_LEN then
    kind = K_ACK
    subtree:add_le(f.ack_seq, tvb(1, 2))
  else
    if bit32.band(flags, FLAG_SHUTDOWN) ~= 0 then kind = K_SHUTDOWN else kind = K_DATA end
    subtree:add_le(f.ack_seq, tvb(1, 2))
    subtree:add_le(f.seq, tvb(3, 2))
    subtree:add(f.payload_len, len - PREAMBLE_LEN):set_generated()
    if len > PREAMBLE_LEN then subtree:add(f.payload, tvb(PREAMBLE_LEN)) end
  end
  subtree:add(f.kind, kind):set_generated()
  subtree:append_text(", " .. kind_names[kind])
  local info = kind_names[kind] .. " [" .. flag_text(flags) .. "]"
  if kind ~= K_STOP then
    info = info .. string.format(" ack=%d", tvb(1, 2):le_uint())
  end
  if kind == K_DATA or kind == K_SHUTDOWN then
    info = info .. string.format(" seq=%d len=%d", tvb(3, 2):le_uint(), len - PREAMBLE_LEN)
  end
  pinfo.cols.info = info
  return len
end

function msp.dissector(tvb, pinfo, tree)
  local ok, res = pcall(dissect, tvb, pinfo, tree)
  if not ok then
    local subtree = tree:add(msp, tvb(), "Serval MSP")
    subtree:add(f.malformed, true):set_generated()
    subtree:add_proto_expert_info(e_malformed, "Dissector error: " .. tostring(res))
    return tvb:len()
  end
  return res
end

local function heuristic(tvb, pinfo, tree)
  if not msp.prefs.heuristic then return false end
  local len = tvb:len()
  if len == 0 then return false end
  if problem(len, tvb(0, 1):uint()) ~= nil then return false end
  msp.dissector(tvb, pinfo, tree)
  return true
end

-- Decode-as only: no port is claimed (`-d udp.port==P,msp` selects it).
DissectorTable.get("udp.port"):add_for_decode_as(msp)
msp:register_heuristic("udp", heuristic)
