/* stub: nothing from log2.h is used */
