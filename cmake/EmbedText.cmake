# cmake -DINPUT=file -DOUTPUT=file.cc -P EmbedText.cmake: a text file as
# `extern const char kBuiltinDevicesYaml[]` in namespace kfleet::planner.
file(READ ${INPUT} content)
set(delim "kfleet_embed")
file(WRITE ${OUTPUT}
  "// Generated from ${INPUT}; edit that file instead.\n"
  "namespace kfleet::planner {\n"
  "extern const char kBuiltinDevicesYaml[];\n"
  "const char kBuiltinDevicesYaml[] = R\"${delim}(${content})${delim}\";\n"
  "}  // namespace kfleet::planner\n")
