# cmake -DDIR=configs/knowledge -DOUTPUT=file.cc -P EmbedKnowledge.cmake: every DIR/<backend>/*.md
# as kfleet::agents::kBuiltinKnowledge, a flat array of (backend, document, text) triples, and
# kBuiltinKnowledgeEntries, the number of strings in it.
foreach(required DIR OUTPUT)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "EmbedKnowledge.cmake: -D${required}=... is required")
  endif()
endforeach()
file(GLOB documents RELATIVE ${DIR} ${DIR}/*/*.md)
list(SORT documents)
set(delim "kfleet_embed")
set(body "")
set(count 0)
foreach(document IN LISTS documents)
  file(READ ${DIR}/${document} content)
  string(FIND "${content}" ")${delim}\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "EmbedKnowledge.cmake: ${document} contains ')${delim}\"'")
  endif()
  get_filename_component(backend ${document} DIRECTORY)
  get_filename_component(name ${document} NAME_WE)
  string(APPEND body "    \"${backend}\", \"${name}\", R\"${delim}(${content})${delim}\",\n")
  math(EXPR count "${count} + 3")
endforeach()
file(WRITE ${OUTPUT}
  "// Generated from ${DIR}; edit those documents instead.\n"
  "namespace kfleet::agents {\n"
  "extern const char* const kBuiltinKnowledge[];\n"
  "extern const int kBuiltinKnowledgeEntries;\n"
  "const char* const kBuiltinKnowledge[] = {\n${body}    nullptr};\n"
  "const int kBuiltinKnowledgeEntries = ${count};\n"
  "}  // namespace kfleet::agents\n")
