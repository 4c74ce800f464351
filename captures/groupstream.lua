-- groupstream.lua: Wireshark/tshark dissector for streamlab's group movie
-- streaming protocol (UDP; docs/groupstream.md). Tested with tshark 4.0 (Lua 5.2).
--
-- It claims no port and has no heuristic: decode a run's ports with
-- decode-as, e.g.
--   tshark -X lua_script:captures/groupstream.lua -d udp.port==12345,groupstream \
--          -d udp.port==5000,groupstream -r run.pcapng
-- (a scenario's ports: the server's standard port, its allocation range
-- and the clients' ports; every streamlab capture names them).
--
-- Wire layout (integers big-endian; Type u8, Seq u64 at offset 1):
--   0x01 len 11 Port Request (Port u16)      | 0x01 len 13 Registration Request (Interval u32 ms)
--   0x02 len 11 Port Allocated (Port u16)    | 0x02 len >= 10 Movies Available
--                                              (Count u8, Count x (Id u16, Len u8, Name))
--   0x04 len 12 Port OK/NOK (Port u16, F u8) | 0x04 len 11 Movie Choice (Movie u16)
--   0x08 len 9 Port ACK                      | 0x00 len 9 ACK
--   0x10 len >= 11 Stream (Movie u16, payload) | 0x20 len 11 End of Movie (Seq = frames, Movie u16)
-- A shared type value is told apart by length, as the spec does. Anything
-- else is malformed (expert info groupstream.malformed); the dissector never
-- raises a Lua error on any input.

local gs = Proto("groupstream", "streamlab group movie streaming")

local kind_names = {
  PORT_REQUEST = "Port Request", PORT_ALLOCATED = "Port Allocated", PORT_OK = "Port OK",
  PORT_NOK = "Port NOK", PORT_ACK = "Port ACK", ACK = "ACK",
  REGISTRATION_REQUEST = "Registration Request", MOVIES_AVAILABLE = "Movies Available",
  MOVIE_CHOICE = "Movie Choice", STREAM = "Stream", END_OF_MOVIE = "End of Movie",
}

local f = {
  type = ProtoField.uint8("groupstream.type", "Type", base.HEX),
  kind = ProtoField.string("groupstream.kind", "Message"),
  seq = ProtoField.uint64("groupstream.seq", "Seq", base.DEC),
  port = ProtoField.uint16("groupstream.port", "Port", base.DEC),
  flag = ProtoField.uint8("groupstream.flag", "F (1 = bound)", base.DEC),
  interval = ProtoField.uint32("groupstream.interval_ms", "Interval (ms, 0 = server default)", base.DEC),
  count = ProtoField.uint8("groupstream.count", "Movie count", base.DEC),
  entry = ProtoField.bytes("groupstream.entry", "Movie"),
  movie = ProtoField.uint16("groupstream.movie", "Movie ID", base.DEC),
  name_len = ProtoField.uint8("groupstream.name_len", "Name size", base.DEC),
  name = ProtoField.string("groupstream.name", "Name"),
  frames = ProtoField.uint64("groupstream.frames", "Frames in the movie", base.DEC),
  payload = ProtoField.bytes("groupstream.payload", "Payload"),
}
gs.fields = { f.type, f.kind, f.seq, f.port, f.flag, f.interval, f.count, f.entry,
  f.movie, f.name_len, f.name, f.frames, f.payload }

local e_malformed = ProtoExpert.new("groupstream.malformed", "Malformed group-streaming message",
  expert.group.MALFORMED, expert.severity.ERROR)
gs.experts = { e_malformed }

-- The message a datagram is, or nil and why not.
local function classify(tvb)
  local len = tvb:len()
  if len == 0 then return nil, "empty datagram" end
  local ty = tvb(0, 1):uint()
  if ty == 0x00 and len == 9 then return "ACK" end
  if ty == 0x08 and len == 9 then return "PORT_ACK" end
  if ty == 0x01 and len == 11 then return "PORT_REQUEST" end
  if ty == 0x01 and len == 13 then return "REGISTRATION_REQUEST" end
  if ty == 0x02 and len == 11 then return "PORT_ALLOCATED" end
  if ty == 0x02 and len >= 10 then
    local count = tvb(9, 1):uint()
    local at = 10
    for _ = 1, count do
      if at + 3 > len then return nil, "Movies Available: an entry runs past the datagram" end
      local n = tvb(at + 2, 1):uint()
      if at + 3 + n > len then return nil, "Movies Available: a name runs past the datagram" end
      at = at + 3 + n
    end
    if at ~= len then return nil, "Movies Available: bytes left over after the last entry" end
    return "MOVIES_AVAILABLE"
  end
  if ty == 0x04 and len == 12 then
    local flag = tvb(11, 1):uint()
    if flag == 1 then return "PORT_OK" end
    if flag == 0 then return "PORT_NOK" end
    return nil, string.format("Port OK/NOK flag %d (must be 0 or 1)", flag)
  end
  if ty == 0x04 and len == 11 then return "MOVIE_CHOICE" end
  if ty == 0x10 and len >= 11 then return "STREAM" end
  if ty == 0x20 and len == 11 then return "END_OF_MOVIE" end
  if ty == 0x00 or ty == 0x01 or ty == 0x02 or ty == 0x04 or ty == 0x08 or ty == 0x10 or ty == 0x20 then
    return nil, string.format("type 0x%02x with a length of %d bytes, which no message of that type has", ty, len)
  end
  return nil, string.format("unknown type 0x%02x", ty)
end

function gs.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  if len == 0 then return 0 end
  pinfo.cols.protocol = "GROUPSTREAM"
  local t = tree:add(gs, tvb(), "Group movie streaming")
  t:add(f.type, tvb(0, 1))
  local kind, why = classify(tvb)
  if not kind then
    t:add_proto_expert_info(e_malformed, why)
    pinfo.cols.info = "Malformed: " .. why
    return len
  end
  t:add(f.kind, kind_names[kind])
  t:add(f.seq, tvb(1, 8))
  local info = kind_names[kind] .. " Seq=" .. tostring(tvb(1, 8):uint64())
  if kind == "PORT_REQUEST" or kind == "PORT_ALLOCATED" or kind == "PORT_OK" or kind == "PORT_NOK" then
    t:add(f.port, tvb(9, 2))
    info = info .. " Port=" .. tvb(9, 2):uint()
    if len == 12 then t:add(f.flag, tvb(11, 1)) end
  elseif kind == "REGISTRATION_REQUEST" then
    t:add(f.interval, tvb(9, 4))
    info = info .. " Interval=" .. tvb(9, 4):uint() .. "ms"
  elseif kind == "MOVIES_AVAILABLE" then
    local count = tvb(9, 1):uint()
    t:add(f.count, tvb(9, 1))
    local at = 10
    for _ = 1, count do
      local n = tvb(at + 2, 1):uint()
      local e = t:add(f.entry, tvb(at, 3 + n))
      e:add(f.movie, tvb(at, 2))
      e:add(f.name_len, tvb(at + 2, 1))
      if n > 0 then e:add(f.name, tvb(at + 3, n)) end
      at = at + 3 + n
    end
    info = info .. " Count=" .. count
  elseif kind == "MOVIE_CHOICE" then
    t:add(f.movie, tvb(9, 2))
    info = info .. " Movie=" .. tvb(9, 2):uint()
  elseif kind == "STREAM" then
    t:add(f.movie, tvb(9, 2))
    if len > 11 then t:add(f.payload, tvb(11, len - 11)) end
    info = info .. " Movie=" .. tvb(9, 2):uint() .. " Len=" .. (len - 11)
  elseif kind == "END_OF_MOVIE" then
    t:add(f.frames, tvb(1, 8))
    t:add(f.movie, tvb(9, 2))
    info = info .. " Movie=" .. tvb(9, 2):uint()
  end
  pinfo.cols.info = info
  return len
end

-- Decode-as only: the scenario's ports are given with -d udp.port==P,groupstream.
DissectorTable.get("udp.port"):add_for_decode_as(gs)
