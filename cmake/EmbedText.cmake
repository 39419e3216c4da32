# cmake -DINPUT=file -DOUTPUT=file.cc -DSYMBOL=kName -DNAMESPACE=kfleet::module -P EmbedText.cmake:
# a text file as `extern const char kName[]` in that namespace, NUL-terminated.
foreach(required INPUT OUTPUT SYMBOL NAMESPACE)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "EmbedText.cmake: -D${required}=... is required")
  endif()
endforeach()
file(READ ${INPUT} content)
set(delim "kfleet_embed")
# The text goes in a raw string literal, which its own closing sequence would end early.
string(FIND "${content}" ")${delim}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "EmbedText.cmake: ${INPUT} contains ')${delim}\"'; change the delimiter")
endif()
file(WRITE ${OUTPUT}
  "// Generated from ${INPUT}; edit that file instead.\n"
  "namespace ${NAMESPACE} {\n"
  "extern const char ${SYMBOL}[];\n"
  "const char ${SYMBOL}[] = R\"${delim}(${content})${delim}\";\n"
  "}  // namespace ${NAMESPACE}\n")
